import { describe, expect, it } from "vitest";
import { decodeModel } from "#core/onnx/graph.ts";
import { shapeBound } from "#core/onnx/shape-bound.ts";
import { buildBertEmbeddingModel } from "../../models/bert.ts";
import { buildCnnModel } from "../../models/cnn.ts";
import { buildIrisModel } from "../../models/iris.ts";
import { buildMlpModel } from "../../models/mlp.ts";
import {
  ElemType,
  encodeModel,
  floatTensor,
  int64Tensor,
  type ModelSpec,
} from "../../models/onnx-builder.ts";
import { zipMapClassifier } from "../support/classifier-models.ts";
import { editModel } from "../support/crafted-models.ts";
import {
  callerLoopModel,
  callerReshapeModel,
  constantOfShapeBombModel,
  expandBombModel,
  outputSizeBombModel,
} from "../support/runaway-models.ts";

const verdict = (bytes: Uint8Array) => shapeBound(decodeModel(bytes));

/** `x` [1, 2] expanded to a shape made by `shapeNodes`, whose output is `shape`. */
function expandTo(shapeNodes: ModelSpec["nodes"], extra: Partial<ModelSpec> = {}): Uint8Array {
  return encodeModel({
    graphName: "expand",
    inputs: [{ name: "x", elemType: ElemType.FLOAT, dims: ["n", 2] }],
    outputs: [{ name: "y", elemType: ElemType.FLOAT, dims: ["a", "b"] }],
    nodes: [...shapeNodes, { opType: "Expand", inputs: ["x", "shape"], outputs: ["y"] }],
    ...extra,
  });
}

describe("shapeBound", () => {
  it.each([
    ["iris", () => buildIrisModel()],
    ["an MLP", () => buildMlpModel({ layers: [8, 16, 4] })],
    ["a CNN", () => buildCnnModel()],
    ["a BERT encoder", () => buildBertEmbeddingModel()],
    ["a ZipMap classifier", () => zipMapClassifier()],
  ])("finds %s shape-bound", (_, build) => {
    expect(verdict(build())).toEqual({ bound: true });
  });

  it("refuses a Loop, whose trip count a caller can set", () => {
    expect(verdict(callerLoopModel())).toEqual({
      bound: false,
      reason: "it runs Loop, whose work an input's values can set",
    });
  });

  it.each([
    ["ConstantOfShape", constantOfShapeBombModel, "'shape'"],
    ["Expand", expandBombModel, "'shape'"],
    ["Range", outputSizeBombModel, "'n'"],
  ])("refuses %s sized by an input's values", (op, build, input) => {
    expect(verdict(build())).toEqual({
      bound: false,
      reason: `${op} takes an output size from ${input}, which is not a constant`,
    });
  });

  it("keeps a Reshape to a caller's shape, which cannot change the element count", () => {
    expect(verdict(callerReshapeModel())).toEqual({ bound: true });
  });

  it("keeps an Expand to a constant shape, folded through other operators", () => {
    const bytes = expandTo(
      [
        {
          opType: "Constant",
          inputs: [],
          outputs: ["half"],
          attributes: { tensor: { tensor: int64Tensor("h", [2], [2n, 1n]) } },
        },
        { opType: "Mul", inputs: ["half", "two"], outputs: ["shape"] },
      ],
      { initializers: [int64Tensor("two", [], [2n])] },
    );

    expect(verdict(bytes)).toEqual({ bound: true });
  });

  it("refuses an Expand to a shape computed from an input's shape", () => {
    // Shape(x) * Shape(x) grows with the square of the input.
    const bytes = expandTo([
      { opType: "Shape", inputs: ["x"], outputs: ["s"] },
      { opType: "Mul", inputs: ["s", "s"], outputs: ["shape"] },
    ]);

    expect(verdict(bytes).bound).toBe(false);
  });

  it("refuses an Expand to an initializer a caller can override (listed among the inputs)", () => {
    const bytes = editModel(expandBombModel(), (model) => {
      model.graph!.initializer = [int64Tensor("shape", [2], [2n, 2n])];
    });

    expect(verdict(bytes)).toEqual({
      bound: false,
      reason: "Expand takes an output size from 'shape', which is not a constant",
    });
  });

  it("refuses a string input, whose work follows its length", () => {
    const bytes = encodeModel({
      graphName: "strings",
      inputs: [{ name: "text", elemType: ElemType.STRING, dims: [1] }],
      outputs: [{ name: "same", elemType: ElemType.STRING, dims: [1] }],
      nodes: [{ opType: "Identity", inputs: ["text"], outputs: ["same"] }],
    });

    expect(verdict(bytes)).toEqual({ bound: false, reason: "input 'text' is a string tensor" });
  });

  it("keeps onnxruntime's fused operators and refuses one of an unknown domain", () => {
    const fused = (domain: string) =>
      editModel(
        encodeModel({
          graphName: "fused",
          inputs: [{ name: "a", elemType: ElemType.FLOAT, dims: [2, 2] }],
          outputs: [{ name: "y", elemType: ElemType.FLOAT, dims: [2, 2] }],
          nodes: [{ opType: "FusedMatMul", inputs: ["a", "w"], outputs: ["y"] }],
          initializers: [floatTensor("w", [2, 2], new Float32Array(4))],
        }),
        (model) => {
          model.graph!.node![0]!.domain = domain;
          model.opsetImport!.push({ domain, version: 1 });
        },
      );

    expect(verdict(fused("com.microsoft"))).toEqual({ bound: true });
    expect(verdict(fused("com.example"))).toEqual({
      bound: false,
      reason: "it runs com.example.FusedMatMul, whose work an input's values can set",
    });
  });
});
