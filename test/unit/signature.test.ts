import { describe, expect, it } from "vitest";
import { InvalidRequestError } from "#core/errors.ts";
import type { ModelSignature } from "#core/model.ts";
import { elementCount, formatShape } from "#core/tensor/shape.ts";
import { checkInputs, selectOutputs } from "#core/v2/signature.ts";
import type { RequestInput } from "#core/v2/wire.ts";

const SIGNATURE: ModelSignature = {
  inputs: [
    { name: "tokens", datatype: "INT64", shape: ["batch", "seq"] },
    { name: "mask", datatype: "BOOL", shape: ["batch", "seq"] },
    { name: "scale", datatype: "FP32", shape: [-1, 3] },
  ],
  outputs: [
    { name: "logits", datatype: "FP32", shape: ["batch", 10] },
    { name: "label", datatype: "BYTES", shape: ["batch"] },
    { name: "score", datatype: "FP32", shape: ["batch"] },
  ],
};

function input(name: string, datatype: string, shape: number[]): RequestInput {
  return { name, datatype, shape, data: [] };
}

function validInputs(): RequestInput[] {
  return [input("tokens", "INT64", [2, 5]), input("mask", "BOOL", [2, 5]), input("scale", "FP32", [7, 3])];
}

function checkError(inputs: RequestInput[], signature: ModelSignature = SIGNATURE): InvalidRequestError {
  try {
    checkInputs(inputs, signature);
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidRequestError);
    return error as InvalidRequestError;
  }
  throw new Error("the inputs were accepted");
}

describe("checkInputs", () => {
  it("returns the matching specs in request order", () => {
    const [tokens, mask, scale] = validInputs() as [RequestInput, RequestInput, RequestInput];

    const specs = checkInputs([scale, tokens, mask], SIGNATURE);

    expect(specs.map((spec) => spec.name)).toEqual(["scale", "tokens", "mask"]);
  });

  it("rejects an unknown input and lists the model's inputs", () => {
    const error = checkError([...validInputs(), input("extra", "FP32", [1])]);

    expect(error.status).toBe(400);
    expect(error.message).toBe("unknown input 'extra'; the model's inputs are: tokens, mask, scale");
  });

  it("rejects an input given twice", () => {
    const error = checkError([...validInputs(), input("mask", "BOOL", [2, 5])]);

    expect(error.message).toBe("input 'mask' is given more than once");
  });

  it("rejects a request missing one input, naming it", () => {
    const error = checkError(validInputs().slice(0, 2));

    expect(error.message).toBe("missing input: scale");
  });

  it("rejects a request missing several inputs, naming them all", () => {
    const error = checkError(validInputs().slice(0, 1));

    expect(error.message).toBe("missing inputs: mask, scale");
  });

  it("rejects an input whose datatype differs from the signature", () => {
    const inputs = validInputs();
    inputs[0] = input("tokens", "INT32", [2, 5]);

    const error = checkError(inputs);

    expect(error.message).toBe("input 'tokens' has datatype INT32 but the model expects INT64");
  });

  it("rejects an input of the wrong rank", () => {
    const inputs = validInputs();
    inputs[2] = input("scale", "FP32", [3]);

    const error = checkError(inputs);

    expect(error.message).toBe("input 'scale' has shape [3] but the model expects [-1, 3]");
  });

  it("rejects an input whose fixed dimension differs", () => {
    const inputs = validInputs();
    inputs[2] = input("scale", "FP32", [7, 4]);

    const error = checkError(inputs);

    expect(error.message).toBe("input 'scale' has shape [7, 4] but the model expects [-1, 3]");
  });

  it.each([0, 1, 1000])("accepts any size (%i) for a -1 dimension", (size) => {
    const inputs = validInputs();
    inputs[2] = input("scale", "FP32", [size, 3]);

    expect(checkInputs(inputs, SIGNATURE)).toHaveLength(3);
  });

  it("accepts any size for a symbolic dimension used by one input", () => {
    const signature: ModelSignature = {
      inputs: [{ name: "x", datatype: "FP32", shape: ["batch", 4] }],
      outputs: [],
    };

    expect(checkInputs([input("x", "FP32", [123, 4])], signature)).toHaveLength(1);
  });

  it("rejects two inputs that bind one symbolic dimension to different sizes", () => {
    const inputs = validInputs();
    inputs[1] = input("mask", "BOOL", [2, 6]);

    const error = checkError(inputs);

    expect(error.message).toBe("dimension 'seq' is 5 in input 'tokens' but 6 in input 'mask'");
  });

  it("rejects a symbolic dimension used twice in one input with different sizes", () => {
    const signature: ModelSignature = {
      inputs: [{ name: "square", datatype: "FP32", shape: ["n", "n"] }],
      outputs: [],
    };

    const error = checkError([input("square", "FP32", [2, 3])], signature);

    expect(error.message).toBe("dimension 'n' is 2 in input 'square' but 3 in input 'square'");
  });
});

describe("selectOutputs", () => {
  it("selects every output in signature order when none is requested", () => {
    expect(selectOutputs(undefined, SIGNATURE)).toEqual(["logits", "label", "score"]);
    expect(selectOutputs([], SIGNATURE)).toEqual(["logits", "label", "score"]);
  });

  it("selects the requested outputs in request order", () => {
    expect(selectOutputs([{ name: "score" }, { name: "logits" }], SIGNATURE)).toEqual(["score", "logits"]);
  });

  it("rejects an unknown output and lists the model's outputs", () => {
    expect(() => selectOutputs([{ name: "probabilities" }], SIGNATURE)).toThrow(
      new InvalidRequestError(
        "unknown output 'probabilities'; the model's outputs are: logits, label, score",
      ),
    );
  });

  it("rejects an output requested twice", () => {
    expect(() => selectOutputs([{ name: "label" }, { name: "label" }], SIGNATURE)).toThrow(
      "output 'label' is requested more than once",
    );
  });
});

describe("shape helpers", () => {
  it("counts the elements of a shape, one for a scalar and zero for an empty dimension", () => {
    expect(elementCount([2, 3, 4])).toBe(24);
    expect(elementCount([])).toBe(1);
    expect(elementCount([5, 0])).toBe(0);
  });

  it("formats symbolic and fixed dimensions alike", () => {
    expect(formatShape(["batch", -1, 3])).toBe("[batch, -1, 3]");
  });
});
