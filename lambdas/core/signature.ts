import { InvalidRequestError } from "./errors.ts";
import type { Dim, ModelSignature, TensorSpec } from "./model.ts";
import type { RequestInput } from "./v2.ts";

export function formatShape(shape: readonly Dim[]): string {
  return `[${shape.join(", ")}]`;
}

/** Number of elements a concrete shape holds. */
export function elementCount(shape: readonly number[]): number {
  let count = 1;
  for (const dim of shape) count *= dim;
  return count;
}

/**
 * Checks the request's inputs against the model's declared inputs: every input present once,
 * none unknown, datatypes equal, ranks equal, fixed dims equal, and symbolic dims that share a
 * name bound to one size across all inputs. Returns the specs in request order.
 */
export function checkInputs(inputs: readonly RequestInput[], signature: ModelSignature): TensorSpec[] {
  const specs = new Map(signature.inputs.map((spec) => [spec.name, spec]));
  const seen = new Set<string>();
  const bindings = new Map<string, { size: number; input: string }>();
  const matched: TensorSpec[] = [];

  for (const input of inputs) {
    const spec = specs.get(input.name);
    if (spec === undefined) {
      throw new InvalidRequestError(
        `unknown input '${input.name}'; the model's inputs are: ${signature.inputs.map((s) => s.name).join(", ")}`,
      );
    }
    if (seen.has(input.name)) throw new InvalidRequestError(`input '${input.name}' is given more than once`);
    seen.add(input.name);

    if (input.datatype !== spec.datatype) {
      throw new InvalidRequestError(
        `input '${input.name}' has datatype ${input.datatype} but the model expects ${spec.datatype}`,
      );
    }
    checkShape(input, spec, bindings);
    matched.push(spec);
  }

  const missing = signature.inputs.filter((spec) => !seen.has(spec.name)).map((spec) => spec.name);
  if (missing.length > 0) {
    throw new InvalidRequestError(`missing input${missing.length > 1 ? "s" : ""}: ${missing.join(", ")}`);
  }
  return matched;
}

function checkShape(
  input: RequestInput,
  spec: TensorSpec,
  bindings: Map<string, { size: number; input: string }>,
): void {
  const mismatch = () =>
    new InvalidRequestError(
      `input '${input.name}' has shape ${formatShape(input.shape)} but the model expects ${formatShape(spec.shape)}`,
    );
  if (input.shape.length !== spec.shape.length) throw mismatch();

  spec.shape.forEach((dim, axis) => {
    const size = input.shape[axis] as number;
    if (typeof dim === "number") {
      if (dim >= 0 && dim !== size) throw mismatch();
      return;
    }
    const bound = bindings.get(dim);
    if (bound === undefined) {
      bindings.set(dim, { size, input: input.name });
    } else if (bound.size !== size) {
      throw new InvalidRequestError(
        `dimension '${dim}' is ${bound.size} in input '${bound.input}' but ${size} in input '${input.name}'`,
      );
    }
  });
}

/** Checks the requested outputs exist; no selection means every output, in signature order. */
export function selectOutputs(
  requested: readonly { name: string }[] | undefined,
  signature: ModelSignature,
): string[] {
  const all = signature.outputs.map((spec) => spec.name);
  if (requested === undefined || requested.length === 0) return all;
  const names = new Set<string>();
  for (const { name } of requested) {
    if (!all.includes(name)) {
      throw new InvalidRequestError(`unknown output '${name}'; the model's outputs are: ${all.join(", ")}`);
    }
    if (names.has(name)) throw new InvalidRequestError(`output '${name}' is requested more than once`);
    names.add(name);
  }
  return [...names];
}
