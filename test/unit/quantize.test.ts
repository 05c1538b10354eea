import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { DataType, decodeModel, readFloats, tensorDims } from "#core/onnx/graph.ts";
import {
  NothingToQuantizeError,
  type QuantizeOptions,
  quantizeDynamicInt8,
} from "#core/optimize/quantize.ts";
import { mulberry32 } from "#core/tensor/seeded-random.ts";
import { buildCnnModel } from "../../models/cnn.ts";
import { buildIrisModel } from "../../models/iris.ts";
import { ElemType, encodeModel, floatTensor, type GraphNode } from "../../models/onnx-builder.ts";
import { buildTransformerMlpModel } from "../../models/transformer-mlp.ts";
import { cosine } from "../support/numeric.ts";

const SESSION = { executionProviders: ["cpu"], intraOpNumThreads: 1, logSeverityLevel: 3 } as const;

function randomFloats(count: number, seed: number, scale = 1): Float32Array {
  const random = mulberry32(seed);
  return Float32Array.from({ length: count }, () => (random() * 2 - 1) * scale);
}

/** Runs a model on one FP32 input and returns its first output. */
async function run(
  model: Uint8Array,
  input: string,
  data: Float32Array,
  dims: number[],
): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(model, SESSION);
  try {
    const results = await session.run({ [input]: new ort.Tensor("float32", data, dims) });
    return results[session.outputNames[0]!]!.data as Float32Array;
  } finally {
    await session.release();
  }
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

/** y = x · W (+ b) with x [batch, k]: one weight, nothing else to get in the way. */
function denseModel(weights: Float32Array, k: number, n: number, nodes?: GraphNode[]): Uint8Array {
  return encodeModel({
    graphName: "dense",
    inputs: [{ name: "x", elemType: ElemType.FLOAT, dims: ["batch", k] }],
    outputs: [{ name: "y", elemType: ElemType.FLOAT, dims: ["batch", n] }],
    initializers: [floatTensor("w", [k, n], weights), floatTensor("b", [n], randomFloats(n, 99, 0.1))],
    nodes: nodes ?? [
      { opType: "MatMul", inputs: ["x", "w"], outputs: ["xw"] },
      { opType: "Add", inputs: ["xw", "b"], outputs: ["y"] },
    ],
  });
}

const initializer = (model: Uint8Array, name: string) =>
  decodeModel(model).graph?.initializer?.find((tensor) => tensor.name === name);

describe("quantizeDynamicInt8", () => {
  const mlp = buildTransformerMlpModel({ blocks: 2, width: 256, hidden: 1024 });
  const batch = 4;
  const input = randomFloats(batch * 256, 7);

  it("produces a model onnxruntime loads whose outputs stay within cosine 0.999 of the original", async () => {
    const { bytes } = quantizeDynamicInt8(mlp);

    const expected = await run(mlp, "input", input, [batch, 256]);
    const actual = await run(bytes, "input", input, [batch, 256]);

    expect(actual).toHaveLength(expected.length);
    expect(cosine(actual, expected)).toBeGreaterThan(0.999);
    expect(maxAbsDiff(actual, expected)).toBeLessThan(0.1);
  });

  it("stores every large MatMul weight as int8 and shrinks the file to under 30%", () => {
    const result = quantizeDynamicInt8(mlp);

    expect(result.quantized.map((weight) => weight.name).sort()).toEqual([
      "block0.down.weight",
      "block0.up.weight",
      "block1.down.weight",
      "block1.up.weight",
    ]);
    expect(result.bytes.byteLength / mlp.byteLength).toBeLessThan(0.3);
    const graph = decodeModel(result.bytes).graph!;
    expect(graph.initializer?.some((tensor) => tensor.name === "block0.up.weight")).toBe(false);
    const quantized = graph.initializer?.find((tensor) => tensor.name === "block0.up.weight_quantized");
    expect(quantized?.dataType).toBe(DataType.INT8);
    expect(graph.node?.filter((node) => node.opType === "DynamicQuantizeMatMul")).toHaveLength(4);
    // The bias Add after each MatMul is folded into the quantized node.
    expect(graph.node?.filter((node) => node.opType === "Add")).toHaveLength(2);
  });

  it("keeps 7-bit weights by default, so that x64 U8S8 kernels cannot saturate", () => {
    const { bytes } = quantizeDynamicInt8(mlp);

    const weight = initializer(bytes, "block0.up.weight_quantized")!;
    const values = new Int8Array(weight.rawData!.buffer, weight.rawData!.byteOffset, weight.rawData!.length);
    const [min, max] = values.reduce(([lo, hi], value) => [Math.min(lo, value), Math.max(hi, value)], [0, 0]);
    expect(min).toBeGreaterThanOrEqual(-63);
    expect(Math.max(max, -min)).toBe(63);
  });

  it("leaves weights below the size threshold in FP32", () => {
    const cnn = buildCnnModel();

    const result = quantizeDynamicInt8(cnn);

    expect(result.quantized.map((weight) => weight.name)).toEqual(["fc1.weight"]);
    expect(result.skipped).toEqual([{ name: "fc2.weight", reason: expect.stringMatching(/1280 elements/) }]);
    expect(initializer(result.bytes, "fc2.weight")?.dataType).toBe(DataType.FLOAT);
    expect(initializer(result.bytes, "fc1.weight")).toBeUndefined();
  });

  it("refuses a model whose weights are all too small to matter", () => {
    expect(() => quantizeDynamicInt8(buildIrisModel())).toThrow(NothingToQuantizeError);
    expect(() => quantizeDynamicInt8(buildIrisModel())).toThrow(
      /no weight qualifies \(hidden.weight: 64 elements, under the 16384 worth quantizing; logits.weight: /,
    );
  });

  it("uses per-channel scales when output channels differ widely in range, and is more accurate for it", async () => {
    const [k, n] = [256, 128];
    // Column j spans ±(1 + j): the widest channel is 128 times the narrowest.
    const weights = randomFloats(k * n, 3).map((value, index) => value * (1 + (index % n)));
    const model = denseModel(weights, k, n);
    const x = randomFloats(2 * k, 4);

    const auto = quantizeDynamicInt8(model);
    const perTensor = quantizeDynamicInt8(model, { perChannel: "never" });

    expect(auto.quantized[0]).toMatchObject({ name: "w", shape: [k, n], perChannel: true });
    expect(auto.quantized[0]!.perChannelGain).toBeGreaterThan(1.5);
    const scales = initializer(auto.bytes, "w_scale")!;
    expect(tensorDims(scales)).toEqual([n]);
    expect(readFloats(scales)[n - 1]! / readFloats(scales)[0]!).toBeGreaterThan(50);
    expect(tensorDims(initializer(perTensor.bytes, "w_scale")!)).toEqual([]);

    const expected = await run(model, "x", x, [2, k]);
    const perChannelError = maxAbsDiff(await run(auto.bytes, "x", x, [2, k]), expected);
    const perTensorError = maxAbsDiff(await run(perTensor.bytes, "x", x, [2, k]), expected);
    expect(perChannelError).toBeLessThan(perTensorError);
  });

  it("keeps one scale per tensor when channels have even ranges", () => {
    const model = denseModel(randomFloats(256 * 128, 5), 256, 128);

    const result = quantizeDynamicInt8(model);

    expect(result.quantized[0]?.perChannel).toBe(false);
    expect(tensorDims(initializer(result.bytes, "w_scale")!)).toEqual([]);
  });

  it("quantizes a Gemm with transB, alpha, beta and a [1, N] bias and keeps its outputs close", async () => {
    const [k, n] = [192, 96];
    const model = encodeModel({
      graphName: "gemm",
      inputs: [{ name: "x", elemType: ElemType.FLOAT, dims: ["batch", k] }],
      outputs: [{ name: "y", elemType: ElemType.FLOAT, dims: ["batch", n] }],
      initializers: [
        floatTensor("w", [n, k], randomFloats(n * k, 11)),
        floatTensor("c", [1, n], randomFloats(n, 12)),
      ],
      nodes: [
        {
          opType: "Gemm",
          inputs: ["x", "w", "c"],
          outputs: ["y"],
          attributes: { transB: { int: 1 }, alpha: { float: 0.5 }, beta: { float: 2 } },
        },
      ],
    });
    const x = randomFloats(3 * k, 13);

    const { bytes, quantized } = quantizeDynamicInt8(model);

    expect(quantized[0]?.shape).toEqual([k, n]);
    const expected = await run(model, "x", x, [3, k]);
    const actual = await run(bytes, "x", x, [3, k]);
    expect(cosine(actual, expected)).toBeGreaterThan(0.999);
  });

  it("keeps the FP32 weight when another node still reads it", async () => {
    const [k, n] = [128, 128];
    const model = denseModel(randomFloats(k * n, 21), k, n, [
      { opType: "MatMul", inputs: ["x", "w"], outputs: ["xw"] },
      { opType: "ReduceSum", inputs: ["w"], outputs: ["wsum"], attributes: { keepdims: { int: 0 } } },
      { opType: "Add", inputs: ["xw", "wsum"], outputs: ["y"] },
    ]);
    const x = randomFloats(k, 22);

    const { bytes } = quantizeDynamicInt8(model);

    expect(initializer(bytes, "w")?.dataType).toBe(DataType.FLOAT);
    expect(cosine(await run(bytes, "x", x, [1, k]), await run(model, "x", x, [1, k]))).toBeGreaterThan(0.999);
  });

  it.each<[string, QuantizeOptions]>([
    ["standard ONNX ops (MatMulInteger)", { ops: "onnx" }],
    ["asymmetric uint8 weights", { weightType: "uint8", reduceRange: false }],
    ["uint8 weights per channel", { weightType: "uint8", reduceRange: false, perChannel: "always" }],
  ])("also produces a valid, close model with %s", async (_, options) => {
    const { bytes } = quantizeDynamicInt8(mlp, options);

    const expected = await run(mlp, "input", input, [batch, 256]);
    expect(cosine(await run(bytes, "input", input, [batch, 256]), expected)).toBeGreaterThan(0.999);
  });
});
