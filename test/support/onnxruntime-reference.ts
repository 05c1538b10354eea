/**
 * onnxruntime-node run directly on a model file: the answer a served model is held to. Requests and
 * expectations share one description of the inputs (`CompatInput`), so the two cannot drift apart.
 */
import * as ort from "onnxruntime-node";
import { expect } from "vitest";
import { fromFloat16Bits, toFloat16Bits } from "#core/tensor/float16.ts";
import type { OrtElementType } from "#core/tensor/tensor.ts";
import type { CompatInput } from "../../models/compat.ts";
import type { V2Datatype } from "../../models/zoo.ts";

/** A tensor in plain values: numbers, bigints for INT64/UINT64, booleans, strings. */
export interface PlainTensor {
  readonly name: string;
  readonly datatype: V2Datatype;
  readonly shape: readonly number[];
  readonly data: readonly unknown[];
}

const ORT_TYPES: Readonly<Record<V2Datatype, OrtElementType>> = {
  BOOL: "bool",
  UINT8: "uint8",
  UINT16: "uint16",
  UINT32: "uint32",
  UINT64: "uint64",
  INT8: "int8",
  INT16: "int16",
  INT32: "int32",
  INT64: "int64",
  FP16: "float16",
  FP32: "float32",
  FP64: "float64",
  BYTES: "string",
};

const V2_OF_ORT = new Map(Object.entries(ORT_TYPES).map(([v2, type]) => [type, v2 as V2Datatype]));

/** Floats agree within 1e-4 absolute plus 1e-3 relative; everything else must be equal. */
const ABSOLUTE_TOLERANCE = 1e-4;
const RELATIVE_TOLERANCE = 1e-3;

/** The request body a V2 client sends for `inputs`, with INT64/UINT64 beyond 2^53 digit for digit. */
export function v2RequestBody(inputs: readonly CompatInput[]): string {
  return JSON.stringify({ inputs }, (_key, value: unknown) =>
    typeof value === "bigint" ? JSON.rawJSON(value.toString()) : value,
  );
}

/** JSON.parse that keeps integers beyond 2^53 exact, as bigints. */
export function parseExactJson(text: string): unknown {
  return JSON.parse(text, (_key, value: unknown, context?: { source?: string }) =>
    typeof value === "number" && !Number.isSafeInteger(value) && /^-?\d+$/.test(context?.source ?? "")
      ? BigInt(context?.source as string)
      : value,
  );
}

function ortTensor(input: CompatInput): ort.Tensor {
  const type = ORT_TYPES[input.datatype];
  const shape = [...input.shape];
  const values = input.data;
  switch (input.datatype) {
    case "BOOL":
      return new ort.Tensor(
        type,
        Uint8Array.from(values, (value) => (value ? 1 : 0)),
        shape,
      );
    case "FP16":
      return new ort.Tensor(
        type,
        Uint16Array.from(values, (value) => toFloat16Bits(value as number)),
        shape,
      );
    case "INT64":
      return new ort.Tensor(
        type,
        BigInt64Array.from(values, (value) => BigInt(value as bigint)),
        shape,
      );
    case "UINT64":
      return new ort.Tensor(
        type,
        BigUint64Array.from(values, (value) => BigInt(value as bigint)),
        shape,
      );
    case "BYTES":
      return new ort.Tensor(type, values as string[], shape);
    default:
      return new ort.Tensor(type, values as number[], shape);
  }
}

function plainValues(tensor: ort.Tensor): unknown[] {
  const data = tensor.data as ArrayLike<unknown>;
  if (tensor.type === "bool") return Array.from(data, Boolean);
  // Without Float16Array, onnxruntime hands half floats back as their bit patterns.
  if (tensor.type === "float16" && data instanceof Uint16Array) return Array.from(data, fromFloat16Bits);
  return Array.from(data);
}

/** Why onnxruntime refuses to load `bytes`, or undefined when it loads them. */
export async function ortLoadError(bytes: Uint8Array): Promise<string | undefined> {
  try {
    const session = await ort.InferenceSession.create(bytes, { logSeverityLevel: 3 });
    await session.release();
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

/** Every output of `bytes` for `inputs`, as onnxruntime computes them, in the graph's output order. */
export async function runDirectly(bytes: Uint8Array, inputs: readonly CompatInput[]): Promise<PlainTensor[]> {
  const session = await ort.InferenceSession.create(bytes, { logSeverityLevel: 3 });
  try {
    const feeds = Object.fromEntries(inputs.map((input) => [input.name, ortTensor(input)]));
    const results = await session.run(feeds);
    return session.outputNames.map((name) => {
      const tensor = results[name] as ort.Tensor;
      const datatype = V2_OF_ORT.get(tensor.type as OrtElementType);
      if (datatype === undefined) throw new Error(`output '${name}' has onnxruntime type ${tensor.type}`);
      return { name, datatype, shape: [...tensor.dims], data: plainValues(tensor) };
    });
  } finally {
    await session.release();
  }
}

/**
 * A V2 float as JSON carries it: a number, a string for a value JSON has no number for, or an integral
 * value beyond 2^53 that parseExactJson read as a bigint.
 */
function asNumber(value: unknown): number {
  return typeof value === "string" || typeof value === "bigint" ? Number(value) : (value as number);
}

function sameElement(datatype: V2Datatype, actual: unknown, expected: unknown): boolean {
  if (datatype === "FP16" || datatype === "FP32" || datatype === "FP64") {
    const a = asNumber(actual);
    const b = expected as number;
    if (Number.isNaN(b) || !Number.isFinite(b)) return Object.is(a, b);
    return Math.abs(a - b) <= ABSOLUTE_TOLERANCE + RELATIVE_TOLERANCE * Math.abs(b);
  }
  if (datatype === "INT64" || datatype === "UINT64") {
    return (typeof actual === "number" || typeof actual === "bigint") && BigInt(actual) === expected;
  }
  return actual === expected;
}

/** Asserts `actual` (from a V2 response) carries `expected`'s datatype, shape and values. */
export function expectSameTensor(actual: PlainTensor | undefined, expected: PlainTensor): void {
  expect(actual, `output '${expected.name}'`).toBeDefined();
  expect({ name: actual!.name, datatype: actual!.datatype, shape: actual!.shape }).toEqual({
    name: expected.name,
    datatype: expected.datatype,
    shape: expected.shape,
  });
  expect(actual!.data, `output '${expected.name}' element count`).toHaveLength(expected.data.length);
  const mismatches = expected.data.flatMap((value, i) =>
    sameElement(expected.datatype, actual!.data[i], value)
      ? []
      : [`[${i}]: served ${String(actual!.data[i])}, onnxruntime ${String(value)}`],
  );
  expect(mismatches, `output '${expected.name}' against onnxruntime`).toEqual([]);
}
