import type { ModelSignature, TensorSpec, VariantParity } from "#core/model.ts";
import type { Manifest } from "#core/registry/manifest.ts";
import { fromFloat16Bits, toFloat16Bits } from "#core/tensor/float16.ts";
import { mulberry32 } from "#core/tensor/seeded-random.ts";
import { elementCount } from "#core/tensor/shape.ts";
import type { NamedTensor, TensorData } from "#core/tensor/tensor.ts";
import { checkInputs } from "#core/v2/signature.ts";
import { decodeInput, ortTypeOf } from "#core/v2/tensor-codec.ts";

/**
 * The parity gate: an optimized variant and its original run on the same inputs, and the variant is
 * only eligible to serve if its outputs stay close by every measure below.
 */

export interface ParityThresholds {
  /** Cosine similarity of each float output (all feeds together) with the original's. @default 0.99 */
  readonly minCosine: number;
  /** Fraction of rows whose top-1 class (or integer/string label) agrees with the original's. @default 0.95 */
  readonly minTop1Agreement: number;
  /** Largest absolute difference, relative to the largest absolute reference value of that output. @default 0.1 */
  readonly maxRelativeDiff: number;
  /** Largest absolute difference allowed outright; unset means only the relative bound applies. */
  readonly maxAbsDiff?: number;
}

export const DEFAULT_PARITY_THRESHOLDS: ParityThresholds = {
  minCosine: 0.99,
  minTop1Agreement: 0.95,
  maxRelativeDiff: 0.1,
};

/** What the gate measured, recorded on every variant passing or not; the caller adds where inputs came from. */
export type ParityFigures = Omit<VariantParity, "inputs">;

/** A float output [batch, C] with C in this range is read as class scores. */
const CLASSIFIER_MAX_CLASSES = 1000;

export interface GeneratedInputOptions {
  /** @default 4 */
  readonly count?: number;
  /** Size of the leading symbolic (batch) dimension. @default 4 */
  readonly batch?: number;
  /** Size of every other symbolic dimension. @default 1 */
  readonly otherDim?: number;
  /** Integer inputs (indices, token ids) are drawn from [0, intRange). @default 8 */
  readonly intRange?: number;
  /** @default 20240601 */
  readonly seed?: number;
  /** Largest feed (all its inputs together) to allocate; a signature that needs more is refused. @default 64 MiB */
  readonly maxFeedBytes?: number;
}

export const DEFAULT_MAX_FEED_BYTES = 64 * 1024 ** 2;

/** Bytes of one element as generated; BYTES inputs are never generated. */
const ELEMENT_BYTES: Readonly<Record<Exclude<TensorSpec["datatype"], "BYTES">, number>> = {
  BOOL: 1,
  INT8: 1,
  UINT8: 1,
  INT16: 2,
  UINT16: 2,
  FP16: 2,
  INT32: 4,
  UINT32: 4,
  FP32: 4,
  INT64: 8,
  UINT64: 8,
  FP64: 8,
};

/** The model cannot be fed generated inputs; a manifest's samples would do. */
export class ParityInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ParityInputError";
  }
}

/**
 * Inputs from the signature with a fixed seed: floats ~ N(0, 1), integers in a small valid range,
 * booleans either way. Symbolic dims that share a name share a size; the leading one is the batch.
 * Sizes are checked before anything is allocated: declared dims can ask for more than memory holds.
 */
export function generateInputs(
  signature: ModelSignature,
  options: GeneratedInputOptions = {},
): NamedTensor[][] {
  const { count = 4, batch = 4, otherDim = 1, intRange = 8, seed = 20240601 } = options;
  const maxFeedBytes = options.maxFeedBytes ?? DEFAULT_MAX_FEED_BYTES;
  const random = mulberry32(seed);
  const feeds: NamedTensor[][] = [];
  for (let feed = 0; feed < count; feed++) {
    const bound = new Map<string, number>();
    const shapes = signature.inputs.map((spec) =>
      spec.shape.map((dim, axis) => concreteDim(dim, axis, bound, batch, otherDim)),
    );
    checkFeedBytes(signature.inputs, shapes, maxFeedBytes);
    feeds.push(
      signature.inputs.map((spec, index) => {
        const dims = shapes[index]!;
        return {
          name: spec.name,
          type: ortTypeOf(spec.datatype),
          dims,
          data: randomData(spec, elementCount(dims), intRange, random),
        };
      }),
    );
  }
  return feeds;
}

function checkFeedBytes(
  specs: readonly TensorSpec[],
  shapes: readonly number[][],
  maxFeedBytes: number,
): void {
  let total = 0;
  specs.forEach((spec, index) => {
    if (spec.datatype === "BYTES") return; // refused, with its own reason, when its data is made
    const bytes = elementCount(shapes[index]!) * ELEMENT_BYTES[spec.datatype];
    total += bytes;
    if (total > maxFeedBytes) {
      throw new ParityInputError(
        `input '${spec.name}' declares shape [${shapes[index]}] (${bytes} bytes of ${spec.datatype}): generated parity inputs are limited to ${maxFeedBytes} bytes per feed; add smaller samples to maas.json`,
      );
    }
  });
}

function concreteDim(
  dim: number | string,
  axis: number,
  bound: Map<string, number>,
  batch: number,
  other: number,
): number {
  if (typeof dim === "number" && dim >= 0) return dim;
  const size = axis === 0 ? batch : other;
  if (typeof dim === "number") return size;
  const existing = bound.get(dim);
  if (existing !== undefined) return existing;
  bound.set(dim, size);
  return size;
}

function randomData(spec: TensorSpec, count: number, intRange: number, random: () => number): TensorData {
  const integers = () => Array.from({ length: count }, () => Math.floor(random() * intRange));
  switch (spec.datatype) {
    case "FP32":
      return Float32Array.from({ length: count }, () => normal(random));
    case "FP64":
      return Float64Array.from({ length: count }, () => normal(random));
    case "FP16":
      return Uint16Array.from({ length: count }, () => toFloat16Bits(normal(random)));
    case "BOOL":
      return Uint8Array.from({ length: count }, () => (random() < 0.5 ? 0 : 1));
    case "INT8":
      return Int8Array.from(integers());
    case "UINT8":
      return Uint8Array.from(integers());
    case "INT16":
      return Int16Array.from(integers());
    case "UINT16":
      return Uint16Array.from(integers());
    case "INT32":
      return Int32Array.from(integers());
    case "UINT32":
      return Uint32Array.from(integers());
    case "INT64":
      return BigInt64Array.from(integers(), BigInt);
    case "UINT64":
      return BigUint64Array.from(integers(), BigInt);
    case "BYTES":
      throw new ParityInputError(
        `input '${spec.name}' is BYTES: text cannot be generated meaningfully; add samples to maas.json`,
      );
  }
}

/** The manifest's samples, checked against the signature like requests are. */
export function manifestSampleInputs(
  manifest: Manifest,
  signature: ModelSignature,
): NamedTensor[][] | undefined {
  if (!manifest.samples || manifest.samples.length === 0) return undefined;
  return manifest.samples.map((sample, index) => {
    try {
      checkInputs(sample.inputs, signature);
      return sample.inputs.map(decodeInput);
    } catch (error) {
      throw new ParityInputError(
        `maas.json sample ${index} does not fit the model: ${(error as Error).message}`,
      );
    }
  });
}

function normal(random: () => number): number {
  const u = Math.max(random(), Number.EPSILON);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}

/**
 * Compares a variant's outputs with the original's, feed by feed (outputs in the same order).
 * `classCount` (e.g. the version's label count) also marks [batch, classCount] outputs as classifiers.
 */
export function compareOutputs(
  reference: readonly (readonly NamedTensor[])[],
  candidate: readonly (readonly NamedTensor[])[],
  thresholds: ParityThresholds = DEFAULT_PARITY_THRESHOLDS,
  classCount?: number,
): ParityFigures {
  const floats = new Map<
    string,
    { dot: number; refNorm: number; candNorm: number; maxAbs: number; refMax: number }
  >();
  let agree = 0;
  let rows = 0;
  let broken: string | undefined;
  reference.forEach((outputs, feed) => {
    outputs.forEach((expected, index) => {
      const actual = candidate[feed]?.[index];
      if (actual === undefined || actual.name !== expected.name) {
        broken ??= `the variant did not produce output '${expected.name}'`;
        return;
      }
      if (actual.dims.join() !== expected.dims.join()) {
        broken ??= `output '${expected.name}' has shape [${actual.dims}] instead of [${expected.dims}]`;
        return;
      }
      if (!isFloat(expected.type)) {
        const labels = exactAgreement(expected.data, actual.data);
        agree += labels.agree;
        rows += labels.rows;
        return;
      }
      const acc = floats.get(expected.name) ?? { dot: 0, refNorm: 0, candNorm: 0, maxAbs: 0, refMax: 0 };
      const a = toNumbers(expected.type, expected.data);
      const b = toNumbers(actual.type, actual.data);
      for (let i = 0; i < a.length; i++) {
        const x = a[i]!;
        const y = b[i]!;
        const diff = Math.abs(x - y);
        // A NaN where the original has a number is as far off as a result can be.
        acc.maxAbs = Math.max(
          acc.maxAbs,
          Number.isNaN(diff) && !Number.isNaN(x) ? Number.POSITIVE_INFINITY : diff || 0,
        );
        if (Number.isFinite(x) && Number.isFinite(y)) {
          acc.dot += x * y;
          acc.refNorm += x * x;
          acc.candNorm += y * y;
          acc.refMax = Math.max(acc.refMax, Math.abs(x));
        }
      }
      floats.set(expected.name, acc);
      if (isClassifierShaped(expected.dims, classCount)) {
        const top1 = argmaxAgreement(a, b, expected.dims.at(-1)!);
        agree += top1.agree;
        rows += top1.rows;
      }
    });
  });

  let cosine = 1;
  let maxAbsDiff = 0;
  let maxRelativeDiff = 0;
  for (const acc of floats.values()) {
    const denominator = Math.sqrt(acc.refNorm * acc.candNorm);
    const similarity = denominator === 0 ? (acc.refNorm === acc.candNorm ? 1 : 0) : acc.dot / denominator;
    cosine = Math.min(cosine, similarity);
    maxAbsDiff = Math.max(maxAbsDiff, acc.maxAbs);
    maxRelativeDiff = Math.max(
      maxRelativeDiff,
      acc.refMax === 0 ? (acc.maxAbs === 0 ? 0 : Number.POSITIVE_INFINITY) : acc.maxAbs / acc.refMax,
    );
  }
  const top1Agreement = rows === 0 ? undefined : agree / rows;
  const reason =
    broken ??
    (cosine < thresholds.minCosine
      ? `cosine ${cosine.toFixed(5)} < ${thresholds.minCosine}`
      : maxRelativeDiff > thresholds.maxRelativeDiff
        ? `max abs diff ${round(maxAbsDiff)} is ${round(maxRelativeDiff)} of the output's range > ${thresholds.maxRelativeDiff}`
        : thresholds.maxAbsDiff !== undefined && maxAbsDiff > thresholds.maxAbsDiff
          ? `max abs diff ${round(maxAbsDiff)} > ${thresholds.maxAbsDiff}`
          : top1Agreement !== undefined && top1Agreement < thresholds.minTop1Agreement
            ? `top-1 agreement ${round(top1Agreement)} < ${thresholds.minTop1Agreement}`
            : undefined);
  return {
    passed: reason === undefined,
    maxAbsDiff,
    maxRelativeDiff,
    cosine,
    ...(top1Agreement === undefined ? {} : { top1Agreement, top1Rows: rows }),
    ...(reason === undefined ? {} : { reason }),
  };
}

/**
 * What "lossless" means here: float32 round-off, not approximation. Every element of every output on
 * every feed within |a - b| <= LOSSLESS_TOLERANCE * max(1, |a|) of the original's (a), NaN where it has
 * NaN and the same infinities; integer, boolean and string outputs exactly equal; the same shapes.
 * Reordered float sums (fused kernels) stay orders of magnitude inside it; 8-bit weights and half-floats
 * do not, and their kinds are never lossless however close they come.
 */
export const LOSSLESS_TOLERANCE = 1e-5;

export interface LosslessCheck {
  readonly lossless: boolean;
  /** The largest |a - b| / max(1, |a|) over the float outputs; 0 when equal. */
  readonly worst: number;
  /** The first element outside the tolerance, for the record. */
  readonly reason?: string;
}

/** Whether a variant's outputs equal the original's within float32 tolerance (see LOSSLESS_TOLERANCE). */
export function checkLossless(
  reference: readonly (readonly NamedTensor[])[],
  candidate: readonly (readonly NamedTensor[])[],
  tolerance = LOSSLESS_TOLERANCE,
): LosslessCheck {
  let worst = 0;
  let reason: string | undefined;
  const fail = (why: string) => {
    reason ??= why;
  };
  reference.forEach((outputs, feed) => {
    outputs.forEach((expected, index) => {
      const actual = candidate[feed]?.[index];
      if (actual === undefined || actual.name !== expected.name) {
        fail(`output '${expected.name}' is missing`);
        return;
      }
      if (actual.type !== expected.type || actual.dims.join() !== expected.dims.join()) {
        fail(
          `output '${expected.name}' is ${actual.type}[${actual.dims}], not ${expected.type}[${expected.dims}]`,
        );
        return;
      }
      if (!isFloat(expected.type)) {
        const at = firstDifference(expected.data, actual.data);
        if (at !== undefined) fail(`output '${expected.name}' differs at element ${at} of feed ${feed}`);
        return;
      }
      const a = toNumbers(expected.type, expected.data);
      const b = toNumbers(actual.type, actual.data);
      for (let i = 0; i < a.length; i++) {
        const x = a[i]!;
        const y = b[i]!;
        if (Object.is(x, y) || (Number.isNaN(x) && Number.isNaN(y))) continue;
        const error = Math.abs(x - y) / Math.max(1, Math.abs(x));
        // NaN or an infinity on one side only: not a round-off.
        const ratio = Number.isFinite(error) ? error : Number.POSITIVE_INFINITY;
        worst = Math.max(worst, ratio);
        if (ratio > tolerance) {
          fail(
            `output '${expected.name}' element ${i} of feed ${feed}: ${y} vs ${x} (${ratio.toPrecision(3)} > ${tolerance})`,
          );
        }
      }
    });
  });
  return { lossless: reason === undefined, worst, ...(reason === undefined ? {} : { reason }) };
}

function firstDifference(a: TensorData, b: TensorData): number | undefined {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return undefined;
}

const round = (value: number) => Number(value.toPrecision(4));

function isFloat(type: NamedTensor["type"]): boolean {
  return type === "float32" || type === "float64" || type === "float16";
}

function toNumbers(type: NamedTensor["type"], data: TensorData): Float64Array | Float32Array {
  if (type === "float16") return Float64Array.from(data as Uint16Array, fromFloat16Bits);
  return data as Float32Array | Float64Array;
}

/** [batch, C] (or [..., C]) float outputs with a plausible class count read as class scores. */
function isClassifierShaped(dims: readonly number[], classCount: number | undefined): boolean {
  if (dims.length < 2) return false;
  const classes = dims.at(-1)!;
  return classes === classCount || (classes >= 2 && classes <= CLASSIFIER_MAX_CLASSES);
}

function argmaxAgreement(a: ArrayLike<number>, b: ArrayLike<number>, classes: number) {
  let agree = 0;
  const rows = a.length / classes;
  for (let row = 0; row < rows; row++) {
    if (argmax(a, row * classes, classes) === argmax(b, row * classes, classes)) agree++;
  }
  return { agree, rows };
}

function argmax(values: ArrayLike<number>, offset: number, length: number): number {
  let best = 0;
  for (let i = 1; i < length; i++) if (values[offset + i]! > values[offset + best]!) best = i;
  return best;
}

function exactAgreement(a: TensorData, b: TensorData) {
  let agree = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) agree++;
  return { agree, rows: a.length };
}
