import onnxProto from "onnx-proto";
import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { buildIrisModel, IRIS_DATASET, IRIS_LABELS } from "../../models/iris.ts";
import { buildMlpModel, MLP_50MB_LAYERS } from "../../models/mlp.ts";
import { floatTensor } from "../../models/onnx-builder.ts";
import { buildDatatypeZooModel, buildFixedShapeModel, type V2Datatype } from "../../models/zoo.ts";

const { onnx } = onnxProto;

// protobufjs decodes int64 fields (ir_version, dims, opset version) as Long objects, not numbers.
function int64(value: number | { toNumber(): number } | null | undefined): number | undefined {
  return value == null || typeof value === "number" ? (value ?? undefined) : value.toNumber();
}

describe("iris model", () => {
  const irisBytes = buildIrisModel();
  const features = new ort.Tensor(
    "float32",
    Float32Array.from(IRIS_DATASET.flatMap((sample) => sample.features)),
    [IRIS_DATASET.length, 4],
  );

  it("classifies at least 95% of the Iris data set when run by onnxruntime", async () => {
    const session = await ort.InferenceSession.create(irisBytes);

    const { label } = await session.run({ features });

    const predicted = label!.data as string[];
    const correct = IRIS_DATASET.filter((sample, i) => predicted[i] === sample.species).length;
    expect(correct / IRIS_DATASET.length).toBeGreaterThanOrEqual(0.95);
  });

  it("labels each flower with the species of highest probability", async () => {
    const session = await ort.InferenceSession.create(irisBytes);

    const { label, probabilities } = await session.run({ features });

    expect(label!.type).toBe("string");
    expect(label!.dims).toEqual([IRIS_DATASET.length]);
    expect(probabilities!.dims).toEqual([IRIS_DATASET.length, IRIS_LABELS.length]);
    const rows = probabilities!.data as Float32Array;
    const expected = IRIS_DATASET.map((_, i) => {
      const row = Array.from(rows.subarray(i * 3, i * 3 + 3));
      expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
      return IRIS_LABELS[row.indexOf(Math.max(...row))];
    });
    expect(label!.data).toEqual(expected);
  });

  it("records its class names, opset and producer in the model file", () => {
    const model = onnx.ModelProto.decode(irisBytes);

    const metadata = Object.fromEntries(model.metadataProps.map(({ key, value }) => [key, value]));
    expect(JSON.parse(metadata.labels!)).toEqual([...IRIS_LABELS]);
    expect(metadata.description).toMatch(/Iris/);
    expect(int64(model.irVersion)).toBe(8);
    expect(model.opsetImport.map(({ domain, version }) => [domain, int64(version)])).toEqual([["", 17]]);
    expect(model.producerName).toBe("serverless-maas");
  });

  it("is byte-for-byte identical when built twice", () => {
    expect(Buffer.from(buildIrisModel()).equals(Buffer.from(irisBytes))).toBe(true);
  });
});

describe("mlp model", () => {
  it("is reproducible from its seed and changes with it", () => {
    const layers = [8, 16, 4];

    const first = Buffer.from(buildMlpModel({ layers, seed: 7 }));
    const again = Buffer.from(buildMlpModel({ layers, seed: 7 }));
    const other = Buffer.from(buildMlpModel({ layers, seed: 8 }));

    expect(first.equals(again)).toBe(true);
    expect(first.equals(other)).toBe(false);
  });

  it("declares a dynamic batch with the first and last layer widths", () => {
    const { graph } = onnx.ModelProto.decode(buildMlpModel({ layers: [8, 16, 4] }));

    const dims = (name: string) =>
      [...(graph?.input ?? []), ...(graph?.output ?? [])]
        .find((info) => info.name === name)
        ?.type?.tensorType?.shape?.dim?.map((dim) => dim.dimParam || int64(dim.dimValue));
    expect(dims("input")).toEqual(["batch", 8]);
    expect(dims("output")).toEqual(["batch", 4]);
  });

  it("sizes the 50 MB preset between 45 and 55 MB and runs it on a [1, 1024] input", async () => {
    const bytes = buildMlpModel({ layers: MLP_50MB_LAYERS });
    expect(bytes.byteLength).toBeGreaterThan(45e6);
    expect(bytes.byteLength).toBeLessThan(55e6);
    const session = await ort.InferenceSession.create(bytes);

    const { output } = await session.run({
      input: new ort.Tensor("float32", new Float32Array(1024).fill(0.5), [1, 1024]),
    });

    expect(output!.dims).toEqual([1, MLP_50MB_LAYERS.at(-1)]);
    const values = Array.from(output!.data as Float32Array);
    expect(values.every(Number.isFinite)).toBe(true);
    expect(values.some((value) => value !== 0)).toBe(true);
  });

  it("rejects fewer than two layer widths", () => {
    expect(() => buildMlpModel({ layers: [4] })).toThrow(/at least two/);
  });
});

describe("datatype zoo model", () => {
  // Two rows of three values per datatype, in the typed arrays onnxruntime-node uses for each.
  const samples: Record<V2Datatype, ort.Tensor> = {
    BOOL: new ort.Tensor("bool", Uint8Array.of(1, 0, 1, 1, 0, 0), [2, 3]),
    UINT8: new ort.Tensor("uint8", Uint8Array.of(0, 1, 2, 127, 128, 255), [2, 3]),
    UINT16: new ort.Tensor("uint16", Uint16Array.of(0, 1, 2, 1000, 40000, 65535), [2, 3]),
    UINT32: new ort.Tensor("uint32", Uint32Array.of(0, 1, 2, 70000, 2 ** 31, 2 ** 32 - 1), [2, 3]),
    UINT64: new ort.Tensor(
      "uint64",
      BigUint64Array.of(0n, 1n, 2n, 2n ** 40n, 2n ** 63n, 2n ** 64n - 1n),
      [2, 3],
    ),
    INT8: new ort.Tensor("int8", Int8Array.of(-128, -1, 0, 1, 2, 127), [2, 3]),
    INT16: new ort.Tensor("int16", Int16Array.of(-32768, -1, 0, 1, 300, 32767), [2, 3]),
    INT32: new ort.Tensor("int32", Int32Array.of(-(2 ** 31), -1, 0, 1, 70000, 2 ** 31 - 1), [2, 3]),
    INT64: new ort.Tensor(
      "int64",
      BigInt64Array.of(-(2n ** 63n), -1n, 0n, 1n, 2n ** 40n, 2n ** 63n - 1n),
      [2, 3],
    ),
    // FP16 travels as its IEEE 754 half-precision bits: 1.0, -2.0, 0.5, 65504 (max), +inf, 0.
    FP16: new ort.Tensor("float16", Uint16Array.of(0x3c00, 0xc000, 0x3800, 0x7bff, 0x7c00, 0x0000), [2, 3]),
    FP32: new ort.Tensor("float32", Float32Array.of(-1.5, 0, 1e-30, 3.25, 1e30, -0), [2, 3]),
    FP64: new ort.Tensor("float64", Float64Array.of(-1.5, 0, 1e-300, Math.PI, 1e300, -0), [2, 3]),
    BYTES: new ort.Tensor("string", ["", "a", "héllo", "日本", "x y", "tab\there"], [2, 3]),
  };

  it("echoes every V2 datatype unchanged through onnxruntime", async () => {
    const session = await ort.InferenceSession.create(buildDatatypeZooModel());
    const feeds = Object.fromEntries(
      Object.entries(samples).map(([datatype, tensor]) => [`in_${datatype.toLowerCase()}`, tensor]),
    );

    const results = await session.run(feeds);

    expect(session.inputNames).toHaveLength(13);
    for (const [datatype, sent] of Object.entries(samples)) {
      const received = results[`out_${datatype.toLowerCase()}`]!;
      expect(received.type, datatype).toBe(sent.type);
      expect(received.dims, datatype).toEqual([2, 3]);
      expect(Array.from(received.data as ArrayLike<unknown>), datatype).toEqual(
        Array.from(sent.data as ArrayLike<unknown>),
      );
    }
  });
});

describe("fixed-shape model", () => {
  it("doubles its [2, 3] input", async () => {
    const session = await ort.InferenceSession.create(buildFixedShapeModel());

    const { y } = await session.run({
      x: new ort.Tensor("float32", Float32Array.of(1, -2, 3.5, 0, 10, -0.25), [2, 3]),
    });

    expect(y!.dims).toEqual([2, 3]);
    expect(Array.from(y!.data as Float32Array)).toEqual([2, -4, 7, 0, 20, -0.5]);
  });

  it("is refused by onnxruntime for an input of another shape", async () => {
    const session = await ort.InferenceSession.create(buildFixedShapeModel());

    const run = session.run({ x: new ort.Tensor("float32", new Float32Array(3), [1, 3]) });

    await expect(run).rejects.toThrow(/dimension/i);
  });
});

describe("onnx builder", () => {
  it("rejects a tensor whose values do not fill its dims", () => {
    expect(() => floatTensor("w", [2, 3], new Float32Array(5))).toThrow(
      "tensor w: dims [2, 3] need 6 values, got 5",
    );
  });
});
