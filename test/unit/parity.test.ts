import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import type { ModelSignature } from "#core/model.ts";
import { DataType, decodeModel, encodeModel, rawTensor, readFloats } from "#core/onnx/graph.ts";
import { inspectModel } from "#core/onnx/inspect.ts";
import {
  checkLossless,
  compareOutputs,
  DEFAULT_PARITY_THRESHOLDS,
  generateInputs,
  LOSSLESS_TOLERANCE,
  manifestSampleInputs,
  ParityInputError,
} from "#core/optimize/parity.ts";
import { quantizeDynamicInt8 } from "#core/optimize/quantize.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import { buildCnnModel } from "../../models/cnn.ts";

const SESSION = { executionProviders: ["cpu"], intraOpNumThreads: 1, logSeverityLevel: 3 } as const;

async function runAll(model: Uint8Array, feeds: readonly NamedTensor[][]): Promise<NamedTensor[][]> {
  const session = await ort.InferenceSession.create(model, SESSION);
  try {
    const results: NamedTensor[][] = [];
    for (const feed of feeds) {
      const inputs = Object.fromEntries(
        feed.map((tensor) => [
          tensor.name,
          new ort.Tensor(tensor.type, tensor.data as ort.Tensor.DataType, tensor.dims as number[]),
        ]),
      );
      const outputs = await session.run(inputs);
      results.push(
        session.outputNames.map((name) => {
          const tensor = outputs[name]!;
          return {
            name,
            type: tensor.type as NamedTensor["type"],
            dims: tensor.dims,
            data: tensor.data as Float32Array,
          };
        }),
      );
    }
    return results;
  } finally {
    await session.release();
  }
}

/** The same model with one FP32 initializer's values rewritten. */
function withWeights(
  model: Uint8Array,
  name: string,
  change: (values: Float32Array) => Float32Array,
): Uint8Array {
  const proto = decodeModel(model);
  proto.graph!.initializer = proto.graph!.initializer!.map((tensor) =>
    tensor.name === name
      ? rawTensor(name, DataType.FLOAT, tensor.dims as number[], change(readFloats(tensor)))
      : tensor,
  );
  return encodeModel(proto);
}

/** Reverses the order of the rows of a [rows, columns] matrix: every output channel reads the wrong features. */
function shuffleRows(values: Float32Array, columns: number): Float32Array {
  const rows = values.length / columns;
  const out = new Float32Array(values.length);
  for (let row = 0; row < rows; row++)
    out.set(values.subarray(row * columns, (row + 1) * columns), (rows - 1 - row) * columns);
  return out;
}

describe("the parity gate on real models", () => {
  const cnn = buildCnnModel();
  const feeds = generateInputs(inspectModel(cnn).signature, { count: 4, batch: 8 });

  it("passes the original against itself with identical figures", async () => {
    const reference = await runAll(cnn, feeds);

    const figures = compareOutputs(reference, await runAll(cnn, feeds));

    expect(figures).toMatchObject({ passed: true, maxAbsDiff: 0, cosine: 1, top1Agreement: 1, top1Rows: 32 });
  });

  it("passes an int8-quantized variant of a classifier", async () => {
    const reference = await runAll(cnn, feeds);

    const figures = compareOutputs(reference, await runAll(quantizeDynamicInt8(cnn).bytes, feeds));

    expect(figures.passed).toBe(true);
    expect(figures.cosine).toBeGreaterThan(0.999);
  });

  it("rejects a variant whose weights were shuffled, on cosine and top-1 agreement", async () => {
    const broken = withWeights(cnn, "fc1.weight", (values) => shuffleRows(values, 2048));
    const reference = await runAll(cnn, feeds);

    const figures = compareOutputs(reference, await runAll(broken, feeds));

    expect(figures.passed).toBe(false);
    expect(figures.reason).toMatch(/^cosine/);
    expect(figures.cosine).toBeLessThan(0.9);
    expect(figures.top1Agreement).toBeLessThan(0.9);
  });

  it("rejects a variant whose weights were scaled, even where cosine alone would pass it", async () => {
    const broken = withWeights(cnn, "fc2.weight", (values) => values.map((value) => value * 1.5));
    const reference = await runAll(cnn, feeds);

    const figures = compareOutputs(reference, await runAll(broken, feeds));

    expect(figures.cosine).toBeGreaterThan(DEFAULT_PARITY_THRESHOLDS.minCosine);
    expect(figures.passed).toBe(false);
    expect(figures.reason).toMatch(/max abs diff .* of the output's range/);
    expect(figures.maxRelativeDiff).toBeGreaterThan(0.2);
  });

  it("finds the original lossless against itself and an int8 variant not, though it passes the gate", async () => {
    const reference = await runAll(cnn, feeds);

    const self = checkLossless(reference, await runAll(cnn, feeds));
    const int8 = checkLossless(reference, await runAll(quantizeDynamicInt8(cnn).bytes, feeds));

    expect(self).toEqual({ lossless: true, worst: 0 });
    expect(int8.lossless).toBe(false);
    expect(int8.worst).toBeGreaterThan(LOSSLESS_TOLERANCE);
    expect(int8.reason).toMatch(/^output 'logits' element \d+ of feed \d: .* > 0.00001\)$/);
  });

  it("applies configured thresholds: an absolute bound fails what the relative one allows", async () => {
    const reference = await runAll(cnn, feeds);
    const candidate = await runAll(quantizeDynamicInt8(cnn).bytes, feeds);

    const figures = compareOutputs(reference, candidate, { ...DEFAULT_PARITY_THRESHOLDS, maxAbsDiff: 1e-6 });

    expect(figures).toMatchObject({
      passed: false,
      reason: expect.stringMatching(/^max abs diff [0-9.]+ > 0.000001$/),
    });
  });
});

describe("compareOutputs", () => {
  const tensor = (name: string, dims: number[], values: number[]): NamedTensor => ({
    name,
    type: "float32",
    dims,
    data: Float32Array.from(values),
  });

  it("fails a variant whose output turns NaN where the original has numbers", () => {
    const figures = compareOutputs(
      [[tensor("y", [1, 3], [1, 2, 3])]],
      [[tensor("y", [1, 3], [1, Number.NaN, 3])]],
    );

    expect(figures.passed).toBe(false);
    expect(figures.maxAbsDiff).toBe(Number.POSITIVE_INFINITY);
  });

  it("fails a variant whose output has another shape", () => {
    const figures = compareOutputs([[tensor("y", [1, 2], [1, 2])]], [[tensor("y", [2, 1], [1, 2])]]);

    expect(figures).toMatchObject({
      passed: false,
      reason: expect.stringMatching(/shape \[2,1\] instead of \[1,2\]/),
    });
  });

  it("counts label agreement on integer and string outputs", () => {
    const labels = (values: string[]): NamedTensor => ({
      name: "label",
      type: "string",
      dims: [values.length],
      data: values,
    });

    const figures = compareOutputs([[labels(["a", "b", "c", "d"])]], [[labels(["a", "b", "c", "x"])]]);

    expect(figures).toMatchObject({ passed: false, top1Agreement: 0.75, top1Rows: 4 });
  });

  it("reads [batch, classes] outputs as class scores and counts top-1 flips", () => {
    const reference = [[tensor("scores", [2, 3], [0.1, 0.5, 0.4, 0.9, 0.05, 0.05])]];
    const flipped = [[tensor("scores", [2, 3], [0.1, 0.44, 0.46, 0.9, 0.05, 0.05])]];

    const figures = compareOutputs(reference, flipped);

    expect(figures).toMatchObject({ top1Agreement: 0.5, top1Rows: 2, passed: false });
    expect(figures.cosine).toBeGreaterThan(0.99);
  });
});

describe("checkLossless", () => {
  const floats = (values: number[], dims = [values.length]): NamedTensor => ({
    name: "y",
    type: "float32",
    dims,
    data: Float32Array.from(values),
  });
  const ints = (values: number[]): NamedTensor => ({
    name: "label",
    type: "int64",
    dims: [values.length],
    data: BigInt64Array.from(values, BigInt),
  });

  it("allows float32 round-off: 1e-5 absolute below 1, relative above it", () => {
    const reference = [[floats([0.5, 1000, -3])]];
    const candidate = [[floats([0.5 + 9e-6, 1000 * (1 + 9e-6), -3])]];

    const check = checkLossless(reference, candidate);

    expect(check.lossless).toBe(true);
    expect(check.worst).toBeGreaterThan(0);
    expect(check.worst).toBeLessThanOrEqual(LOSSLESS_TOLERANCE);
  });

  it("refuses anything beyond it: one element is enough", () => {
    const check = checkLossless([[floats([0.5, 1000])]], [[floats([0.5, 1000 * (1 + 3e-5)])]]);

    expect(check).toMatchObject({ lossless: false, reason: expect.stringMatching(/element 1 of feed 0/) });
  });

  it("requires NaN where the original has NaN, the same infinities, and the same shape", () => {
    const nan = Number.NaN;
    const inf = Number.POSITIVE_INFINITY;

    expect(checkLossless([[floats([nan, inf])]], [[floats([nan, inf])]]).lossless).toBe(true);
    expect(checkLossless([[floats([1, 2])]], [[floats([1, nan])]]).lossless).toBe(false);
    expect(checkLossless([[floats([1, inf])]], [[floats([1, -inf])]]).lossless).toBe(false);
    expect(checkLossless([[floats([1, 2], [1, 2])]], [[floats([1, 2], [2, 1])]]).lossless).toBe(false);
  });

  it("requires integer and label outputs to be exactly equal", () => {
    expect(checkLossless([[ints([1, 2, 3])]], [[ints([1, 2, 3])]]).lossless).toBe(true);
    expect(checkLossless([[ints([1, 2, 3])]], [[ints([1, 2, 4])]])).toMatchObject({
      lossless: false,
      reason: "output 'label' differs at element 2 of feed 0",
    });
  });
});

describe("parity inputs", () => {
  const signature: ModelSignature = {
    inputs: [
      { name: "ids", datatype: "INT64", shape: ["batch", "sequence"] },
      { name: "mask", datatype: "BOOL", shape: ["batch", "sequence"] },
      { name: "features", datatype: "FP32", shape: [-1, 3] },
      { name: "half", datatype: "FP16", shape: [2] },
    ],
    outputs: [{ name: "y", datatype: "FP32", shape: ["batch", 2] }],
  };

  it("generates inputs from the signature: batch first, shared dims agree, integers in a small range", () => {
    const feed = generateInputs(signature, { count: 1, batch: 3, otherDim: 5, intRange: 8 })[0]!;

    expect(feed.map((input) => [input.name, input.type, input.dims])).toEqual([
      ["ids", "int64", [3, 5]],
      ["mask", "bool", [3, 5]],
      ["features", "float32", [3, 3]],
      ["half", "float16", [2]],
    ]);
    const ids = [...(feed[0]!.data as BigInt64Array)];
    expect(ids.every((id) => id >= 0n && id < 8n)).toBe(true);
    expect(new Set(ids).size).toBeGreaterThan(1);
    expect([...(feed[1]!.data as Uint8Array)].every((bit) => bit === 0 || bit === 1)).toBe(true);
  });

  it("generates the same inputs for the same seed and others for another", () => {
    const first = generateInputs(signature, { seed: 1 });
    const again = generateInputs(signature, { seed: 1 });
    const other = generateInputs(signature, { seed: 2 });

    expect(again).toEqual(first);
    expect(other).not.toEqual(first);
  });

  it("refuses to invent text inputs, naming maas.json samples as the way out", () => {
    const text: ModelSignature = { inputs: [{ name: "text", datatype: "BYTES", shape: [1] }], outputs: [] };

    expect(() => generateInputs(text)).toThrow(ParityInputError);
    expect(() => generateInputs(text)).toThrow(/samples to maas.json/);
  });

  it("refuses, before allocating, a signature whose declared dims need more than the feed bound", () => {
    const huge: ModelSignature = {
      inputs: [{ name: "x", datatype: "FP32", shape: [2 ** 31 - 1, 2 ** 31 - 1] }],
      outputs: [],
    };
    const wide: ModelSignature = {
      inputs: [
        { name: "a", datatype: "FP32", shape: ["batch", 1024] },
        { name: "b", datatype: "INT64", shape: ["batch", 1024] },
      ],
      outputs: [],
    };

    expect(() => generateInputs(huge)).toThrow(ParityInputError);
    expect(() => generateInputs(huge)).toThrow(
      /input 'x' declares shape \[2147483647,2147483647\] .* limited to 67108864 bytes per feed; add smaller samples to maas.json/,
    );
    // 4 x 1024 x (4 + 8) bytes: within 64 KiB, not within 32 KiB.
    expect(generateInputs(wide, { count: 1, maxFeedBytes: 64 * 1024 })[0]).toHaveLength(2);
    expect(() => generateInputs(wide, { count: 1, maxFeedBytes: 32 * 1024 })).toThrow(/input 'b'/);
  });

  it("decodes manifest samples and rejects one that does not fit the signature", () => {
    const model: ModelSignature = {
      inputs: [{ name: "x", datatype: "FP32", shape: ["batch", 2] }],
      outputs: [{ name: "y", datatype: "FP32", shape: ["batch", 2] }],
    };
    const good = { samples: [{ inputs: [{ name: "x", shape: [1, 2], datatype: "FP32", data: [1, 2] }] }] };
    const bad = { samples: [{ inputs: [{ name: "x", shape: [1, 3], datatype: "FP32", data: [1, 2, 3] }] }] };

    expect(manifestSampleInputs(good, model)).toEqual([
      [{ name: "x", type: "float32", dims: [1, 2], data: Float32Array.of(1, 2) }],
    ]);
    expect(manifestSampleInputs({}, model)).toBeUndefined();
    expect(() => manifestSampleInputs(bad, model)).toThrow(/sample 0 does not fit the model/);
  });
});
