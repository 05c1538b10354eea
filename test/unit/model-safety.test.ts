import onnxProto from "onnx-proto";
import { describe, expect, it } from "vitest";
import { inspectModel, OLDEST_GUARANTEED_OPSET } from "#core/onnx/inspect.ts";
import { ElemType, floatTensor, int64Tensor } from "../../models/onnx-builder.ts";
import { legacyOpsetModel } from "../support/classifier-models.ts";
import {
  constantBiasModel,
  craftedModels,
  editModel,
  externalDataModel,
  negativeOutputDimModel,
  oldOpsetModel,
  rejection,
  validAddModel,
} from "../support/crafted-models.ts";

const { onnx } = onnxProto;

const refusedByInspection = craftedModels().filter((model) => model.caughtBy === "inspect");
const refusedByOnnxruntime = craftedModels().filter((model) => model.caughtBy === "try-load");

describe("model safety checks", () => {
  it("accept the unmodified model every crafted one starts from", () => {
    const inspection = inspectModel(validAddModel());

    expect(inspection.signature.inputs).toEqual([{ name: "x", datatype: "FP32", shape: ["batch", 2] }]);
  });

  it.each(refusedByInspection.map((model) => [model.name, model] as const))(
    "refuse %s with an InvalidModelError (422) naming the problem",
    (_name, model) => {
      const error = rejection(model.bytes);

      expect(error.status).toBe(422);
      expect(error.code).toBe("invalid_model");
      expect(error.message).toMatch(model.reason);
    },
  );

  it.each(refusedByOnnxruntime.map((model) => [model.name, model] as const))(
    "let %s through: only onnxruntime's try-load can refuse it",
    (_name, model) => {
      expect(() => inspectModel(model.bytes)).not.toThrow();
    },
  );

  it("accept the oldest guaranteed operator set without a warning, and the one before it with one", () => {
    const guaranteed = inspectModel(oldOpsetModel(OLDEST_GUARANTEED_OPSET));
    const older = inspectModel(oldOpsetModel(OLDEST_GUARANTEED_OPSET - 1));

    expect(guaranteed.opsetVersion).toBe(OLDEST_GUARANTEED_OPSET);
    expect(guaranteed.warnings).toEqual([]);
    expect(older.warnings).toEqual([
      "the model uses ONNX operator set 6; onnxruntime keeps running operator sets below 7 but no longer " +
        "guarantees them: re-export with opset >= 7 when you can",
    ]);
  });

  it.each([1, 2, 3, 4, 5, 6])("accept operator set %i with a warning naming it", (opset) => {
    const inspection = inspectModel(legacyOpsetModel(opset));

    expect(inspection.opsetVersion).toBe(opset);
    expect(inspection.warnings).toEqual([
      expect.stringContaining(`operator set ${opset}; onnxruntime keeps`),
    ]);
  });

  it("accept a model that imports no default operator set, warning that onnxruntime picks one", () => {
    const bytes = editModel(validAddModel(), (model) => {
      model.opsetImport = [onnx.OperatorSetIdProto.create({ domain: "ai.onnx.ml", version: 3 })];
    });

    const inspection = inspectModel(bytes);

    expect(inspection.opsetVersion).toBe(0);
    expect(inspection.warnings).toEqual([
      expect.stringMatching(/imports no ai\.onnx operator set; onnxruntime picks one/),
    ]);
  });

  it.each([
    ["a Windows drive path", "C:\\models\\weights.bin"],
    ["a lower-case drive path", "d:/weights.bin"],
    ["a backslash parent reference", "..\\secrets\\weights.bin"],
    ["a parent reference inside the path", "weights/../../outside.bin"],
  ])("refuse external data at %s as leaving the model's folder", (_case, location) => {
    expect(rejection(externalDataModel(location)).message).toContain(
      `points at external data '${location}' outside the model's folder: refused`,
    );
  });

  it("refuses a tensor marked EXTERNAL even without a location", () => {
    const bytes = validAddModel({
      initializers: [
        {
          name: "bias",
          dims: [2],
          dataType: ElemType.FLOAT,
          dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        },
      ],
    });

    expect(rejection(bytes).message).toMatch(
      /initializer 'bias' keeps its data in an external file: only single-file/,
    );
  });

  it("refuse a tensor with external-data entries even when its data location says DEFAULT", () => {
    const bytes = editModel(validAddModel(), (model) => {
      model.graph!.initializer![0]!.externalData = [
        onnx.StringStringEntryProto.create({ key: "location", value: "weights.bin" }),
      ];
    });

    expect(rejection(bytes).message).toMatch(/keeps its data in an external file 'weights\.bin'/);
  });

  it("refuse external data inside a subgraph attribute", () => {
    const bytes = editModel(validAddModel(), (model) => {
      model.graph!.node![0]!.attribute = [
        onnx.AttributeProto.create({
          name: "then_branch",
          type: onnx.AttributeProto.AttributeType.GRAPH,
          g: {
            name: "branch",
            initializer: [
              {
                name: "hidden",
                dims: [1],
                dataType: ElemType.FLOAT,
                dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
                externalData: [{ key: "location", value: "/etc/hosts" }],
              },
            ],
          },
        }),
      ];
    });

    expect(rejection(bytes).message).toMatch(/initializer 'hidden' points at external data '\/etc\/hosts'/);
  });

  it("accept an input dimension of 2^31 - 1 and refuse 2^31", () => {
    const withDim = (dim: number) =>
      validAddModel({ inputs: [{ name: "x", elemType: ElemType.FLOAT, dims: ["batch", dim] }] });

    expect(() => inspectModel(withDim(2 ** 31 - 1))).not.toThrow();
    expect(rejection(withDim(2 ** 31)).message).toBe(
      "'x' declares a dimension of 2147483648, which no real tensor has",
    );
  });

  it("read a negative input or output dimension as an unknown size (-1), as onnxruntime does", () => {
    const bytes = validAddModel({ inputs: [{ name: "x", elemType: ElemType.FLOAT, dims: [-1, 2] }] });

    expect(inspectModel(bytes).signature.inputs[0]!.shape).toEqual([-1, 2]);
    expect(inspectModel(negativeOutputDimModel()).signature.outputs[0]!.shape).toEqual(["batch", -1]);
  });

  it("refuse a negative initializer dimension", () => {
    const bytes = validAddModel({ initializers: [{ name: "bias", dims: [-2], dataType: ElemType.FLOAT }] });

    expect(rejection(bytes).message).toBe("initializer 'bias' declares a dimension of -2");
  });

  it("refuse raw_data longer than the dims claim", () => {
    const bias = floatTensor("bias", [3], Float32Array.of(1, 2, 3));
    const bytes = validAddModel({ initializers: [{ ...bias, dims: [2] }] });

    expect(rejection(bytes).message).toBe(
      "initializer 'bias' declares 2 elements (8 bytes) but stores 12 bytes",
    );
  });

  it("refuse an int64 tensor whose int64_data count differs from its dims", () => {
    const bytes = validAddModel({
      initializers: [
        floatTensor("bias", [2], Float32Array.of(1, 2)),
        { name: "shape", dims: [3], dataType: ElemType.INT64, int64Data: [1, 2] },
      ],
    });

    expect(rejection(bytes).message).toBe("initializer 'shape' declares 3 elements but holds 2");
  });

  it("check tensors of Constant nodes as well as initializers", () => {
    const bytes = constantBiasModel({ name: "v", dims: [2], dataType: ElemType.FLOAT, floatData: [1] });

    expect(rejection(bytes).message).toBe(
      "attribute 'value' of node 'bias_constant' declares 2 elements but holds 1",
    );
  });

  it("count 4-bit tensors two elements to a byte, in raw_data and in int32_data", () => {
    const int4 = 22;
    const bytes = validAddModel({
      initializers: [
        floatTensor("bias", [2], Float32Array.of(1, 2)),
        { name: "packed_raw", dims: [3], dataType: int4, rawData: Uint8Array.of(0x21, 0x03) },
        { name: "packed_typed", dims: [4], dataType: int4, int32Data: [0x21, 0x43] },
      ],
    });
    const short = validAddModel({
      initializers: [
        floatTensor("bias", [2], Float32Array.of(1, 2)),
        { name: "packed_raw", dims: [6], dataType: int4, rawData: Uint8Array.of(0x21, 0x03) },
      ],
    });

    expect(() => inspectModel(bytes)).not.toThrow();
    expect(rejection(short).message).toBe(
      "initializer 'packed_raw' declares 6 elements (3 bytes) but stores 2 bytes",
    );
  });

  it("accept tensors stored in typed fields, raw_data, and empty tensors with no data", () => {
    const bytes = validAddModel({
      initializers: [
        { name: "bias", dims: [2], dataType: ElemType.FLOAT, floatData: [1, 2] },
        int64Tensor("unused_shape", [2], [1n, 2n]),
        { name: "unused_empty", dims: [0, 4], dataType: ElemType.FLOAT },
      ],
    });

    expect(() => inspectModel(bytes)).not.toThrow();
  });
});
