/** Tensors as the try-it form edits them: nested JSON arrays, their shapes, random inputs of a signature. */
import type { OutputTensor, TensorMetadata } from "./schemas.ts";

/** A dynamic dimension (-1, or a symbolic name) gets this many entries in a generated input. */
const DYNAMIC_DIM = 1;
/** Generated inputs stop at this many elements; a larger fixed shape is cut back to one row. */
const MAX_GENERATED_ELEMENTS = 65_536;

export type Nested = unknown[] | string | number | boolean | null;

/** The concrete shape a generated input takes for a declared one. */
function concreteShape(shape: readonly number[]): number[] {
  return shape.map((dim) => (dim >= 0 ? dim : DYNAMIC_DIM));
}

function randomValue(datatype: string, random: () => number): string | number | boolean {
  if (datatype === "BOOL") return random() < 0.5;
  if (datatype === "BYTES") return "hello";
  if (datatype.startsWith("FP")) return Math.round(random() * 1000) / 1000;
  // Small non-negative integers fit every integer type and most index-like inputs.
  return Math.floor(random() * 10);
}

function fill(shape: readonly number[], make: () => string | number | boolean): Nested {
  if (shape.length === 0) return make();
  const [first = 0, ...rest] = shape;
  return Array.from({ length: first }, () => fill(rest, make));
}

/** A random tensor of the input's datatype and shape, nested as the shape says. */
export function randomInput(spec: TensorMetadata, random: () => number = Math.random): Nested {
  let shape = concreteShape(spec.shape);
  const count = shape.reduce((product, dim) => product * dim, 1);
  if (count > MAX_GENERATED_ELEMENTS && shape.length > 0) shape = [1, ...shape.slice(1)];
  return fill(shape, () => randomValue(spec.datatype, random));
}

/** The shape of a nested array; throws when its rows are ragged. */
export function shapeOf(value: unknown): number[] {
  if (!Array.isArray(value)) return [];
  if (value.length === 0) return [0];
  const inner = shapeOf(value[0]);
  for (const row of value) {
    if (JSON.stringify(shapeOf(row)) !== JSON.stringify(inner)) {
      throw new Error("rows of different lengths: every row must have the same shape");
    }
  }
  return [value.length, ...inner];
}

/** Rows of a [rows, k] output (or one row of a [k] one), flat data read row-major. */
export function rowsOf<T>(output: OutputTensor, read: (value: unknown) => T): T[][] {
  const flat = (output.data as unknown[]).flat(Number.POSITIVE_INFINITY).map(read);
  const width =
    output.shape.length >= 2 ? (output.shape[output.shape.length - 1] ?? flat.length) : flat.length;
  const rows: T[][] = [];
  for (let at = 0; at < flat.length; at += Math.max(1, width))
    rows.push(flat.slice(at, at + Math.max(1, width)));
  return rows;
}

export function toNumber(value: unknown): number {
  return typeof value === "number" ? value : Number(value);
}

/** Euclidean norm. */
export function norm(values: readonly number[]): number {
  return Math.sqrt(values.reduce((sum, value) => sum + value * value, 0));
}

/** A short view of a tensor's data: its first values. */
export function preview(output: OutputTensor, count = 12): string {
  const flat = (output.data as unknown[]).flat(Number.POSITIVE_INFINITY);
  const shown = flat
    .slice(0, count)
    .map((value) => (typeof value === "number" ? formatNumber(value) : JSON.stringify(value)));
  return `[${shown.join(", ")}${flat.length > count ? `, … ${flat.length - count} more` : ""}]`;
}

export function formatNumber(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  if (value !== 0 && (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e6)) return value.toExponential(3);
  return String(Math.round(value * 10_000) / 10_000);
}

export function formatMs(ms: number): string {
  return `${ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2)} ms`;
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  return `${(bytes / 1024 ** 3).toFixed(2)} GB`;
}

export function describeShape(shape: readonly (number | string)[]): string {
  return `[${shape.map((dim) => (dim === -1 ? "?" : String(dim))).join(", ")}]`;
}
