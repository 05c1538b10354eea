import { InvalidRequestError } from "#core/errors.ts";
import type { ModelSignature, TensorSpec } from "#core/model.ts";
import { formatShape } from "#core/tensor/shape.ts";
import type { RequestInput } from "./wire.ts";

/**
 * Checks the request's inputs against the model's declared inputs: every input present once,
 * none unknown, datatypes equal, ranks equal, fixed dims equal, and symbolic dims that share a
 * name bound to one size across all inputs. Returns the specs in request order.
 */
export function checkInputs(inputs: readonly RequestInput[], signature: ModelSignature): TensorSpec[] {
  // Models take a handful of inputs: scans of the signature cost less than building maps per request.
  const matched: TensorSpec[] = [];
  const bindings: DimensionBinding[] = [];

  for (const input of inputs) {
    const spec = signature.inputs.find((candidate) => candidate.name === input.name);
    if (spec === undefined) {
      throw new InvalidRequestError(
        `unknown input '${input.name}'; the model's inputs are: ${signature.inputs.map((s) => s.name).join(", ")}`,
      );
    }
    if (matched.includes(spec))
      throw new InvalidRequestError(`input '${input.name}' is given more than once`);

    if (input.datatype !== spec.datatype) {
      throw new InvalidRequestError(
        `input '${input.name}' has datatype ${input.datatype} but the model expects ${spec.datatype}`,
      );
    }
    checkShape(input, spec, bindings);
    matched.push(spec);
  }

  const missing = signature.inputs.filter((spec) => !matched.includes(spec)).map((spec) => spec.name);
  if (missing.length > 0) {
    throw new InvalidRequestError(`missing input${missing.length > 1 ? "s" : ""}: ${missing.join(", ")}`);
  }
  return matched;
}

/** The size a symbolic dimension took in the first input that has it. */
interface DimensionBinding {
  readonly dim: string;
  readonly size: number;
  readonly input: string;
}

function checkShape(input: RequestInput, spec: TensorSpec, bindings: DimensionBinding[]): void {
  if (input.shape.length !== spec.shape.length) throw shapeMismatch(input, spec);
  for (const [axis, dim] of spec.shape.entries()) {
    const size = input.shape[axis] as number;
    if (typeof dim === "number") {
      if (dim >= 0 && dim !== size) throw shapeMismatch(input, spec);
      continue;
    }
    const bound = bindings.find((binding) => binding.dim === dim);
    if (bound === undefined) {
      bindings.push({ dim, size, input: input.name });
    } else if (bound.size !== size) {
      throw new InvalidRequestError(
        `dimension '${dim}' is ${bound.size} in input '${bound.input}' but ${size} in input '${input.name}'`,
      );
    }
  }
}

function shapeMismatch(input: RequestInput, spec: TensorSpec): InvalidRequestError {
  return new InvalidRequestError(
    `input '${input.name}' has shape ${formatShape(input.shape)} but the model expects ${formatShape(spec.shape)}`,
  );
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
