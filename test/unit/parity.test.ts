import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import type { ModelSignature } from "#core/model.ts";
import { DataType, decodeModel, encodeModel, rawTensor, readFloats } from "#core/onnx/graph.ts";
import { inspectModel } from "#core/onnx/inspect.ts";
import {
  compareOutputs,
  DEFAULT_PARITY_THRESHOLDS,
  generateInputs,
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
