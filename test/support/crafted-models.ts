/**
 * Malicious and broken ONNX models, one per class the register function must refuse. Each builder
 * starts from the same tiny valid graph (y = x + bias) and changes one thing, so a rejection can
 * only come from that change.
 */
import onnxProto from "onnx-proto";
import { InvalidModelError, inspectModel } from "#core/onnx/inspect.ts";
import { mulberry32 } from "#core/tensor/seeded-random.ts";
import {
  ElemType,
  encodeModel,
  floatTensor,
  type ModelSpec,
  PRODUCER_NAME,
  type Tensor,
} from "../../models/onnx-builder.ts";
import { thrownBy } from "./rejection.ts";

const { onnx } = onnxProto;

/** y = x + bias, FP32 [batch, 2]: loads and runs in onnxruntime. */
export function validAddModel(overrides: Partial<ModelSpec> = {}): Uint8Array {
  return encodeModel({
    graphName: "add",
    inputs: [{ name: "x", elemType: ElemType.FLOAT, dims: ["batch", 2] }],
    outputs: [{ name: "y", elemType: ElemType.FLOAT, dims: ["batch", 2] }],
    initializers: [floatTensor("bias", [2], Float32Array.of(1, 2))],
    nodes: [{ opType: "Add", inputs: ["x", "bias"], outputs: ["y"] }],
    ...overrides,
  });
}

/** Decodes a model, lets the caller edit the protobuf message, and encodes it again. */
export function editModel(bytes: Uint8Array, edit: (model: onnxProto.onnx.ModelProto) => void): Uint8Array {
  const model = onnx.ModelProto.decode(bytes);
  edit(model);
  return onnx.ModelProto.encode(model).finish();
}

/** Seeded random bytes: not a protobuf ModelProto at all. */
export function randomBytesModel(length = 4096, seed = 42): Uint8Array {
  const random = mulberry32(seed);
  return Uint8Array.from({ length }, () => Math.floor(random() * 256));
}

/** A well-formed ModelProto (IR version, opset, producer) that carries no graph. */
export function modelWithoutGraph(): Uint8Array {
  return onnx.ModelProto.encode(
    onnx.ModelProto.create({
      irVersion: 8,
      opsetImport: [{ domain: "", version: 17 }],
      producerName: PRODUCER_NAME,
    }),
  ).finish();
}

/**
 * The default operator set below the oldest onnxruntime guarantees (7): such models are served when
 * onnxruntime loads them, but it has no kernel left for Add before version 7, so this one it refuses.
 */
export function oldOpsetModel(opsetVersion = 6): Uint8Array {
  return validAddModel({ opsetVersion, irVersion: 3 });
}

/** The initializer `bias` keeps its data in an external file at `location`. */
export function externalDataModel(location: string): Uint8Array {
  return validAddModel({
    initializers: [
      {
        name: "bias",
        dims: [2],
        dataType: ElemType.FLOAT,
        dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        externalData: [
          { key: "location", value: location },
          { key: "offset", value: "0" },
          { key: "length", value: "8" },
        ],
      },
    ],
  });
}

export const absoluteExternalDataModel = () => externalDataModel("/etc/passwd");
export const escapingExternalDataModel = () => externalDataModel("../../../../etc/shadow");
export const relativeExternalDataModel = () => externalDataModel("weights.bin");

/** `bias` comes from a Constant node named `bias_constant` holding `tensor`, not from an initializer. */
export function constantBiasModel(tensor: Tensor): Uint8Array {
  return validAddModel({
    initializers: [],
    nodes: [
      {
        name: "bias_constant",
        opType: "Constant",
        inputs: [],
        outputs: ["bias"],
        attributes: { value: { tensor } },
      },
      { opType: "Add", inputs: ["x", "bias"], outputs: ["y"] },
    ],
  });
}

/** A Constant node whose tensor attribute points at external data: not an initializer, still refused. */
export function externalDataConstantModel(): Uint8Array {
  return constantBiasModel({
    name: "bias_value",
    dims: [2],
    dataType: ElemType.FLOAT,
    dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
    externalData: [{ key: "location", value: "/proc/self/environ" }],
  });
}

/** The input `x` declares a dimension of 2^40. */
export function hugeInputDimModel(): Uint8Array {
  return validAddModel({ inputs: [{ name: "x", elemType: ElemType.FLOAT, dims: ["batch", 2 ** 40] }] });
}

/** The output `y` declares a negative dimension: an unknown size, to onnxruntime as to the signature. */
export function negativeOutputDimModel(): Uint8Array {
  return validAddModel({ outputs: [{ name: "y", elemType: ElemType.FLOAT, dims: ["batch", -3] }] });
}

/** The initializer `bias` claims 2 FP32 elements (8 bytes) but its raw_data holds 4 bytes. */
export function truncatedRawDataModel(): Uint8Array {
  const bias = floatTensor("bias", [2], Float32Array.of(1, 2));
  return validAddModel({ initializers: [{ ...bias, rawData: bias.rawData!.subarray(0, 4) }] });
}

/** The initializer `bias` declares 10^12 FP32 elements (4 TB) and stores none. */
export function trillionElementModel(): Uint8Array {
  return validAddModel({
    initializers: [{ name: "bias", dims: [1_000_000, 1_000_000], dataType: ElemType.FLOAT }],
  });
}

/** The initializer `bias` declares 2 elements but holds 1 value in float_data. */
export function typedFieldCountModel(): Uint8Array {
  return validAddModel({
    initializers: [{ name: "bias", dims: [2], dataType: ElemType.FLOAT, floatData: [1] }],
  });
}

/** An initializer dimension of 2^40 (checked apart from graph inputs and outputs). */
export function hugeInitializerDimModel(): Uint8Array {
  return validAddModel({
    initializers: [{ name: "bias", dims: [2 ** 40], dataType: ElemType.FLOAT }],
  });
}

/** The output `y` is a sequence of tensors (encodeModel only writes tensors: set by editing the proto). */
export function sequenceOutputModel(): Uint8Array {
  return editModel(validAddModel(), (model) => {
    model.graph!.output![0]!.type = onnx.TypeProto.create({
      sequenceType: { elemType: { tensorType: { elemType: ElemType.FLOAT } } },
    });
  });
}

/** Passes every protobuf-level check, but its node's op type exists in no operator set. */
export function unknownOperatorModel(): Uint8Array {
  return validAddModel({ nodes: [{ opType: "NoSuchOperator", inputs: ["x", "bias"], outputs: ["y"] }] });
}

/** Passes every protobuf-level check, but its node reads a tensor that nothing produces. */
export function danglingInputModel(): Uint8Array {
  return validAddModel({ nodes: [{ opType: "Add", inputs: ["x", "nowhere"], outputs: ["y"] }] });
}

/** The InvalidModelError that inspectModel throws for `bytes`; fails the test if it accepts them. */
export function rejection(bytes: Uint8Array): InvalidModelError {
  return thrownBy(() => inspectModel(bytes), InvalidModelError);
}

export interface CraftedModel {
  /** A valid model name (also the test's label). */
  readonly name: string;
  readonly bytes: Uint8Array;
  /** What the failure reason must say. */
  readonly reason: RegExp;
  /** Which check refuses it: the protobuf inspection, or the onnxruntime try-load. */
  readonly caughtBy: "inspect" | "try-load";
}

/** Every class of model registration must refuse, with the reason it must give. */
export function craftedModels(): CraftedModel[] {
  const inspect = (name: string, bytes: Uint8Array, reason: RegExp): CraftedModel => ({
    name,
    bytes,
    reason,
    caughtBy: "inspect",
  });
  return [
    inspect("random-bytes", randomBytesModel(), /^not an ONNX model/),
    inspect("no-graph", modelWithoutGraph(), /^not an ONNX model: it has no graph$/),
    inspect(
      "external-absolute",
      absoluteExternalDataModel(),
      /initializer 'bias' points at external data '\/etc\/passwd' outside the model's folder: refused/,
    ),
    inspect(
      "external-escaping",
      escapingExternalDataModel(),
      /initializer 'bias' points at external data '\.\.\/\.\.\/\.\.\/\.\.\/etc\/shadow' outside the model's folder/,
    ),
    inspect(
      "external-relative",
      relativeExternalDataModel(),
      /initializer 'bias' keeps its data in an external file 'weights\.bin': only single-file models are served/,
    ),
    inspect(
      "external-constant",
      externalDataConstantModel(),
      /attribute 'value' of node 'bias_constant' points at external data '\/proc\/self\/environ'/,
    ),
    inspect("input-dim-2pow40", hugeInputDimModel(), /'x' declares a dimension of 1099511627776/),
    inspect(
      "raw-data-short",
      truncatedRawDataModel(),
      /initializer 'bias' declares 2 elements \(8 bytes\) but stores 4 bytes/,
    ),
    inspect(
      "trillion-elements",
      trillionElementModel(),
      /initializer 'bias' declares 1000000000000 elements but holds 0/,
    ),
    inspect(
      "typed-field-count",
      typedFieldCountModel(),
      /initializer 'bias' declares 2 elements but holds 1/,
    ),
    inspect(
      "initializer-dim-2pow40",
      hugeInitializerDimModel(),
      /initializer 'bias' declares a dimension of 1099511627776/,
    ),
    inspect(
      "sequence-output",
      sequenceOutputModel(),
      /output 'y' is not a tensor \(sequence, map or optional types are not served\)/,
    ),
    {
      name: "opset-6",
      bytes: oldOpsetModel(),
      reason:
        /^onnxruntime cannot load the model: .*Add\(6\).*\(the model uses ONNX operator set 6; .*opset >= 7\)$/,
      caughtBy: "try-load",
    },
    {
      name: "unknown-operator",
      bytes: unknownOperatorModel(),
      reason: /^onnxruntime cannot load the model: .*NoSuchOperator/,
      caughtBy: "try-load",
    },
    {
      name: "dangling-input",
      bytes: danglingInputModel(),
      reason: /^onnxruntime cannot load the model: .*nowhere/,
      caughtBy: "try-load",
    },
  ];
}
