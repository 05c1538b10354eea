import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { AttributeType, DataType, decodeModel, encodeModel as encodeProto } from "#core/onnx/graph.ts";
import { inspectModel } from "#core/onnx/inspect.ts";
import { convertToFloat16, Fp16ConversionError } from "#core/optimize/fp16.ts";
import { float32ToFloat16Bits, toFloat16Bits } from "#core/tensor/float16.ts";
import { mulberry32 } from "#core/tensor/seeded-random.ts";
import { buildCnnModel } from "../../models/cnn.ts";
import { ElemType, encodeModel, floatTensor } from "../../models/onnx-builder.ts";

const SESSION = { executionProviders: ["cpu"], intraOpNumThreads: 1, logSeverityLevel: 3 } as const;

async function run(model: Uint8Array, feeds: Record<string, ort.Tensor>): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(model, SESSION);
  try {
    const results = await session.run(feeds);
    return results[session.outputNames[0]!]!.data as Float32Array;
  } finally {
    await session.release();
  }
}

describe("convertToFloat16", () => {
  const cnn = buildCnnModel();
  const random = mulberry32(3);
  const image = new ort.Tensor(
    "float32",
    Float32Array.from({ length: 2 * 3 * 32 * 32 }, () => random()),
    [2, 3, 32, 32],
  );

  it("keeps the FP32 signature while storing the weights in FP16, at half the bytes", () => {
    const { bytes, convertedTensors } = convertToFloat16(cnn);

    expect(inspectModel(bytes).signature).toEqual(inspectModel(cnn).signature);
    expect(bytes.byteLength / cnn.byteLength).toBeLessThan(0.51);
    expect(convertedTensors).toBe(8);
    const weights = decodeModel(bytes).graph!.initializer!.filter((tensor) =>
      tensor.name?.endsWith(".weight"),
    );
    expect(weights.map((tensor) => tensor.dataType)).toEqual(Array(4).fill(DataType.FLOAT16));
  });

  it("produces outputs onnxruntime computes within FP16 precision of the original", async () => {
    const expected = await run(cnn, { image });
    const actual = await run(convertToFloat16(cnn).bytes, { image });

    expect(actual).toHaveLength(expected.length);
    for (let i = 0; i < expected.length; i++) expect(actual[i]).toBeCloseTo(expected[i]!, 1);
  });

  it("retypes casts and constants and clamps values beyond FP16's range", async () => {
    const model = encodeModel({
      graphName: "casts",
      inputs: [{ name: "x", elemType: ElemType.INT64, dims: [3] }],
      outputs: [{ name: "y", elemType: ElemType.FLOAT, dims: [3] }],
      initializers: [floatTensor("mask", [3], Float32Array.of(0, -1e9, 0.5))],
      nodes: [
        { opType: "Cast", inputs: ["x"], outputs: ["xf"], attributes: { to: { int: ElemType.FLOAT } } },
        { opType: "Constant", inputs: [], outputs: ["two"], attributes: { value_float: { float: 2 } } },
        { opType: "Mul", inputs: ["xf", "two"], outputs: ["doubled"] },
        { opType: "Add", inputs: ["doubled", "mask"], outputs: ["y"] },
      ],
    });

    const result = convertToFloat16(model);
    const y = await run(result.bytes, { x: new ort.Tensor("int64", BigInt64Array.of(1n, 2n, 3n), [3]) });

    expect(result.clampedValues).toBe(1);
    expect([y[0], y[2]]).toEqual([2, 6.5]);
    // -1e9 became FP16's lowest finite value, not -Infinity (which would turn later sums into NaN).
    expect(y[1]).toBeGreaterThanOrEqual(-65504);
    expect(y[1]).toBeLessThan(-65000);
  });

  it("refuses models with control flow", () => {
    const branch = (value: number) => ({
      name: "branch",
      output: [
        { name: `out${value}`, type: { tensorType: { elemType: ElemType.FLOAT, shape: { dim: [] } } } },
      ],
      node: [
        {
          opType: "Constant",
          output: [`out${value}`],
          attribute: [{ name: "value_float", type: AttributeType.FLOAT, f: value }],
        },
      ],
    });
    const proto = decodeModel(
      encodeModel({
        graphName: "if",
        inputs: [{ name: "flag", elemType: ElemType.BOOL, dims: [] }],
        outputs: [{ name: "y", elemType: ElemType.FLOAT, dims: [] }],
        nodes: [{ opType: "If", inputs: ["flag"], outputs: ["y"] }],
      }),
    );
    proto.graph!.node![0]!.attribute = [
      { name: "then_branch", type: AttributeType.GRAPH, g: branch(1) },
      { name: "else_branch", type: AttributeType.GRAPH, g: branch(0) },
    ];

    expect(() => convertToFloat16(encodeProto(proto))).toThrow(Fp16ConversionError);
  });
});

describe("float32ToFloat16Bits", () => {
  it("rounds every value as the reference half-precision conversion does", () => {
    const random = mulberry32(9);
    const values = Float32Array.from({ length: 20_000 }, (_, i) => {
      const magnitude = 2 ** (random() * 44 - 28); // subnormals through the top of the range
      return (i % 2 === 0 ? 1 : -1) * magnitude;
    });
    values.set([0, -0, 65504, 2 ** -24, 2 ** -25, 1 + 2 ** -11, 1 + 3 * 2 ** -11]);

    const { bits } = float32ToFloat16Bits(values);

    const mismatches = [...values].filter((value, i) => Math.min(toFloat16Bits(value), 0xfbff) !== bits[i]);
    expect(mismatches).toEqual([]);
  });
});
