import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { decodeModel, encodeModel } from "#core/onnx/graph.ts";
import { inspectModel } from "#core/onnx/inspect.ts";
import { expectedProbabilities, ZIPMAP_LABELS, zipMapClassifier } from "../support/classifier-models.ts";
import { rejection, validAddModel } from "../support/crafted-models.ts";

/** Two rows of features: the classifier's input. */
const FEATURES = [1, 2, 3, -1];

async function run(bytes: Uint8Array) {
  const session = await ort.InferenceSession.create(bytes);
  try {
    return await session.run({ x: new ort.Tensor("float32", Float32Array.from(FEATURES), [2, 2]) });
  } finally {
    await session.release();
  }
}

describe("a classifier whose probabilities end in a ZipMap", () => {
  it("is served with the probabilities as FP32 [N, C], the class labels in order on the output", () => {
    const inspection = inspectModel(zipMapClassifier());

    expect(inspection.signature.outputs).toEqual([
      { name: "output_label", datatype: "INT64", shape: ["N"] },
      { name: "output_probability", datatype: "FP32", shape: [-1, 3], classLabels: [...ZIPMAP_LABELS] },
    ]);
    expect(inspection.servedBytes).toBeInstanceOf(Uint8Array);
    expect(inspection.warnings).toEqual([
      expect.stringMatching(
        /^output 'output_probability' was a ZipMap's sequence of maps, .* served as FP32 \[N, 3\], .*class labels in the model metadata.*'zipmap': False/,
      ),
    ]);
  });

  it("keeps the rows dimension the probabilities declare, and no value_info that still declares maps", () => {
    const inspection = inspectModel(zipMapClassifier({ declareProbabilities: true }));
    const served = decodeModel(inspection.servedBytes!);

    expect(inspection.signature.outputs[1]).toMatchObject({ shape: ["N", 3] });
    expect(served.graph!.valueInfo!.map((value) => value.name)).toEqual(["probabilities"]);
  });

  it("writes integer class labels as strings", () => {
    const inspection = inspectModel(zipMapClassifier({ labels: [10, -2, 7] }));

    expect(inspection.signature.outputs[1]!.classLabels).toEqual(["10", "-2", "7"]);
  });

  it("replaces the ZipMap with an Identity whose model onnxruntime-node runs, returning the probabilities", async () => {
    const upload = zipMapClassifier();
    const inspection = inspectModel(upload);

    const outputs = await run(inspection.servedBytes!);

    await expect(run(upload)).rejects.toThrow(/Non tensor type/);
    expect(decodeModel(inspection.servedBytes!).graph!.node!.map((node) => node.opType)).toEqual([
      "MatMul",
      "Softmax",
      "ArgMax",
      "Identity",
    ]);
    expect(outputs.output_probability!.dims).toEqual([2, 3]);
    const probabilities = Array.from(outputs.output_probability!.data as Float32Array);
    expectedProbabilities(FEATURES).forEach((expected, i) => {
      expect(probabilities[i]).toBeCloseTo(expected, 6);
    });
    expect(Array.from(outputs.output_label!.data as BigInt64Array)).toEqual([1n, 0n]);
  });

  it("keeps every other byte of the upload, fields onnx-proto does not know included", async () => {
    // Field 1000, varint 1: unknown to every ONNX schema, so re-encoding the decoded model would drop it.
    const unknownField = Uint8Array.of(0xc0, 0x3e, 0x01);
    const upload = zipMapClassifier();
    const withUnknown = new Uint8Array([...upload, ...unknownField]);

    const served = inspectModel(withUnknown).servedBytes!;

    expect(Array.from(served.subarray(served.length - unknownField.length))).toEqual([...unknownField]);
    expect(encodeModel(decodeModel(withUnknown))).toHaveLength(upload.length);
    expect(Array.from(served.subarray(0, 4))).toEqual(Array.from(withUnknown.subarray(0, 4)));
    expect((await run(served)).output_probability!.dims).toEqual([2, 3]);
  });

  it("gives the same bytes every time, so replays of one upload write one artifact", () => {
    const upload = zipMapClassifier({ declareProbabilities: true });

    expect(inspectModel(upload).servedBytes).toEqual(inspectModel(upload).servedBytes);
  });

  it("is refused, with the sklearn-onnx option, when another node reads the maps", () => {
    const bytes = zipMapClassifier({
      extraNodes: [{ opType: "SequenceLength", inputs: ["output_probability"], outputs: ["rows"] }],
    });

    expect(rejection(bytes).message).toMatch(
      /^output 'output_probability' is not a tensor .*: it is a sequence of maps, .*no ZipMap that could be replaced .*options=\{id\(model\): \{'zipmap': False\}\}\)$/,
    );
  });

  it("leaves a model without a ZipMap as it was uploaded", () => {
    const inspection = inspectModel(validAddModel());

    expect(inspection.servedBytes).toBeUndefined();
    expect(inspection.signature.outputs[0]).not.toHaveProperty("classLabels");
  });
});
