import onnxProto from "onnx-proto";
import { describe, expect, it } from "vitest";
import { V2_DATATYPES } from "#core/model.ts";
import { inspectModel } from "#core/onnx/inspect.ts";
import { mulberry32 } from "#core/tensor/seeded-random.ts";
import { buildIrisModel, IRIS_LABELS } from "../../models/iris.ts";
import { ElemType } from "../../models/onnx-builder.ts";
import { buildDatatypeZooModel, buildFixedShapeModel } from "../../models/zoo.ts";
import {
  validAddModel as addModel,
  editModel as edited,
  rejection as inspectError,
} from "../support/crafted-models.ts";

const { onnx } = onnxProto;

describe("inspectModel", () => {
  it("extracts the iris model's signature", () => {
    const inspection = inspectModel(buildIrisModel());

    expect(inspection.signature).toEqual({
      inputs: [{ name: "features", datatype: "FP32", shape: ["batch", 4] }],
      outputs: [
        { name: "probabilities", datatype: "FP32", shape: ["batch", 3] },
        { name: "label", datatype: "BYTES", shape: ["batch"] },
      ],
    });
  });

  it("reads the iris model's labels and description from its metadata", () => {
    const inspection = inspectModel(buildIrisModel());

    expect(inspection.labels).toEqual([...IRIS_LABELS]);
    expect(inspection.description).toMatch(/^Iris species from sepal and petal/);
    expect(inspection.metadata.labels).toBe(JSON.stringify(IRIS_LABELS));
  });

  it("reports the IR version, default opset and producer", () => {
    const inspection = inspectModel(buildIrisModel());

    expect(inspection.irVersion).toBe(8);
    expect(inspection.opsetVersion).toBe(17);
    expect(inspection.producer).toBe("serverless-maas");
  });

  it("maps every served ONNX element type to its V2 datatype", () => {
    const inspection = inspectModel(buildDatatypeZooModel());

    expect(inspection.signature.inputs).toEqual(
      V2_DATATYPES.map((datatype) => ({
        name: `in_${datatype.toLowerCase()}`,
        datatype,
        shape: ["batch", "n"],
      })),
    );
    expect(inspection.signature.outputs.map((spec) => spec.datatype)).toEqual([...V2_DATATYPES]);
  });

  it("reads fixed dimensions as numbers", () => {
    const inspection = inspectModel(buildFixedShapeModel());

    expect(inspection.signature).toEqual({
      inputs: [{ name: "x", datatype: "FP32", shape: [2, 3] }],
      outputs: [{ name: "y", datatype: "FP32", shape: [2, 3] }],
    });
  });

  it("leaves out an initializer listed among the graph inputs, as older exporters do", () => {
    const bytes = addModel({
      inputs: [
        { name: "x", elemType: ElemType.FLOAT, dims: ["batch", 2] },
        { name: "bias", elemType: ElemType.FLOAT, dims: [2] },
      ],
    });

    const inspection = inspectModel(bytes);

    expect(inspection.signature.inputs.map((spec) => spec.name)).toEqual(["x"]);
  });

  it("reports a dimension with neither a size nor a name as -1", () => {
    const bytes = edited(addModel(), (model) => {
      model.graph!.input![0]!.type!.tensorType!.shape!.dim = [{}, { dimValue: 2 }] as never;
    });

    const inspection = inspectModel(bytes);

    expect(inspection.signature.inputs[0]!.shape).toEqual([-1, 2]);
  });

  it("reports a scalar input as shape []", () => {
    const inspection = inspectModel(
      addModel({
        inputs: [{ name: "x", elemType: ElemType.FLOAT, dims: [] }],
        outputs: [{ name: "y", elemType: ElemType.FLOAT, dims: [2] }],
      }),
    );

    expect(inspection.signature.inputs[0]!.shape).toEqual([]);
  });

  it("falls back to the model's doc string for the description", () => {
    const inspection = inspectModel(addModel({ docString: "Adds a bias." }));

    expect(inspection.description).toBe("Adds a bias.");
    expect(inspection.labels).toBeUndefined();
  });

  it("has no description when neither metadata nor doc string gives one", () => {
    expect(inspectModel(addModel()).description).toBeUndefined();
  });

  it.each([
    ["not JSON", "setosa,versicolor"],
    ["not an array", '{"0": "setosa"}'],
    ["not all strings", '["setosa", 1]'],
  ])("ignores labels that are %s but still inspects the model", (_case, labels) => {
    const inspection = inspectModel(addModel({ metadata: { labels } }));

    expect(inspection.labels).toBeUndefined();
    expect(inspection.metadata.labels).toBe(labels);
  });

  it("rejects bytes that are not a protobuf ModelProto", () => {
    const error = inspectError(new TextEncoder().encode("this is not an ONNX model"));

    expect(error.status).toBe(422);
    expect(error.message).toMatch(/^not an ONNX model: /);
  });

  it("rejects random bytes", () => {
    const random = mulberry32(42);
    const bytes = Uint8Array.from({ length: 4096 }, () => Math.floor(random() * 256));

    const error = inspectError(bytes);

    expect(error.message).toMatch(/^not an ONNX model/);
  });

  it("rejects an empty file", () => {
    expect(inspectError(new Uint8Array()).message).toBe("not an ONNX model: it has no graph");
  });

  it("leaves a graph without nodes to onnxruntime, which runs one whose outputs are its inputs", () => {
    const passThrough = addModel({
      nodes: [],
      initializers: [],
      outputs: [{ name: "x", elemType: ElemType.FLOAT, dims: ["batch", 2] }],
    });

    const inspection = inspectModel(passThrough);

    expect(inspection.signature.outputs).toEqual([{ name: "x", datatype: "FP32", shape: ["batch", 2] }]);
  });

  it("rejects a model without a graph", () => {
    const bytes = edited(addModel(), (model) => {
      model.graph = null;
    });

    expect(inspectError(bytes).message).toBe("not an ONNX model: it has no graph");
  });

  it("rejects a graph without outputs", () => {
    const error = inspectError(addModel({ outputs: [] }));

    expect(error.message).toBe("the model's graph has no outputs");
  });

  it("rejects an input whose element type is not served, naming it", () => {
    const error = inspectError(
      addModel({ inputs: [{ name: "x", elemType: 16 as ElemType, dims: ["batch", 2] }] }),
    );

    expect(error.message).toBe("input 'x' has element type BFLOAT16, which is not served");
  });

  it("rejects an output that is not a tensor, saying what to export instead", () => {
    const bytes = edited(addModel(), (model) => {
      model.graph!.output![0]!.type = onnx.TypeProto.create({
        sequenceType: { elemType: { tensorType: { elemType: ElemType.FLOAT } } },
      });
    });

    const error = inspectError(bytes);

    expect(error.message).toBe(
      "output 'y' is not a tensor (sequence, map or optional types are not served): it is a sequence, which " +
        "onnxruntime-node cannot return: export a tensor instead (e.g. ConcatFromSequence the elements before the graph output)",
    );
  });

  it.each([
    [
      "a map input",
      "input",
      { mapType: { keyType: ElemType.STRING, valueType: { tensorType: { elemType: ElemType.FLOAT } } } },
      /^input 'x' is not a tensor .*: it is a map, which onnxruntime-node cannot take: export the model with a tensor input \(sklearn-onnx: vectorize/,
    ],
    [
      "a sequence input",
      "input",
      { sequenceType: { elemType: { tensorType: { elemType: ElemType.FLOAT } } } },
      /^input 'x' is not a tensor .*: it is a sequence, which onnxruntime-node cannot take: export the model with one tensor input per element/,
    ],
    [
      "a map output",
      "output",
      { mapType: { keyType: ElemType.INT64, valueType: { tensorType: { elemType: ElemType.FLOAT } } } },
      /^output 'y' is not a tensor .*: it is a map, which onnxruntime-node cannot return: export its values as a tensor$/,
    ],
    [
      "an optional output",
      "output",
      { optionalType: { elemType: { tensorType: { elemType: ElemType.FLOAT } } } },
      /^output 'y' is not a tensor .*: it is optional, which onnxruntime-node cannot return: export a plain tensor$/,
    ],
    [
      "a sequence of maps no ZipMap makes",
      "output",
      {
        sequenceType: {
          elemType: {
            mapType: { keyType: ElemType.STRING, valueType: { tensorType: { elemType: ElemType.FLOAT } } },
          },
        },
      },
      /^output 'y' is not a tensor .*: it is a sequence of maps, .*options=\{id\(model\): \{'zipmap': False\}\}\)$/,
    ],
  ] as const)("rejects %s with a hint for the export", (_case, role, type, message) => {
    const bytes = edited(addModel(), (model) => {
      const value = role === "input" ? model.graph!.input![0]! : model.graph!.output![0]!;
      value.type = onnx.TypeProto.create(type);
    });

    expect(inspectError(bytes).message).toMatch(message);
  });

  it("rejects an input that declares no shape", () => {
    const bytes = edited(addModel(), (model) => {
      model.graph!.input![0]!.type!.tensorType!.shape = null;
    });

    const error = inspectError(bytes);

    expect(error.message).toBe("input 'x' declares no shape");
  });
});
