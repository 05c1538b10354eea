import type { Pooling } from "./task.ts";

/** A classification answer: row-major [batch, topK], best first. */
export interface Classification {
  readonly labels: string[];
  readonly scores: Float32Array;
}

/**
 * The `topK` best classes of each row of `logits` [batch, width]: softmax first unless the model already
 * answers probabilities. Names come from `labels` (index i names class i), else the class index. Equal
 * scores keep class order.
 */
export function classify(
  logits: Float32Array,
  batch: number,
  width: number,
  labels: readonly string[] | undefined,
  topK: number,
  alreadyProbabilities: boolean,
): Classification {
  expectLength("logits", logits, batch * width);
  if (labels !== undefined && labels.length !== width) {
    throw new RangeError(`${labels.length} labels for a classifier of width ${width}`);
  }
  if (!Number.isInteger(topK) || topK < 1)
    throw new RangeError(`top_k must be a positive integer, got ${topK}`);
  const k = Math.min(topK, width);
  const names: string[] = [];
  const scores = new Float32Array(batch * k);
  for (let b = 0; b < batch; b++) {
    const row = logits.subarray(b * width, (b + 1) * width);
    const probabilities = alreadyProbabilities ? Float64Array.from(row) : softmax(row);
    const order = Array.from({ length: width }, (_, i) => i);
    // Array.prototype.sort is stable: ties stay in class order.
    order.sort((x, y) => probabilities[y]! - probabilities[x]!);
    for (let i = 0; i < k; i++) {
      const index = order[i]!;
      names.push(labels?.[index] ?? String(index));
      scores[b * k + i] = probabilities[index]!;
    }
  }
  return { labels: names, scores };
}

/**
 * One vector per row of `hidden` [batch, length, width]: the mean of the tokens `attentionMask`
 * [batch, length] keeps, or the first token's ([CLS]); then scaled to unit L2 norm if `normalize`.
 */
export function pool(
  hidden: Float32Array,
  batch: number,
  length: number,
  width: number,
  attentionMask: BigInt64Array,
  pooling: Pooling,
  normalize: boolean,
): Float32Array {
  expectLength("hidden states", hidden, batch * length * width);
  expectLength("attention mask", attentionMask, batch * length);
  const pooled = new Float32Array(batch * width);
  const sum = new Float64Array(width);
  for (let b = 0; b < batch; b++) {
    sum.fill(0);
    let count = 0;
    for (let t = 0; t < (pooling === "cls" ? Math.min(1, length) : length); t++) {
      if (pooling === "mean" && attentionMask[b * length + t] === 0n) continue;
      count++;
      const offset = (b * length + t) * width;
      for (let d = 0; d < width; d++) sum[d]! += hidden[offset + d]!;
    }
    // A row of padding only (an empty text without special tokens) pools to zeros, not NaN.
    const divisor = Math.max(count, 1);
    let squares = 0;
    for (let d = 0; d < width; d++) {
      sum[d]! /= divisor;
      squares += sum[d]! * sum[d]!;
    }
    // PyTorch's F.normalize: a zero vector stays zero.
    const scale = normalize ? 1 / Math.max(Math.sqrt(squares), 1e-12) : 1;
    for (let d = 0; d < width; d++) pooled[b * width + d] = sum[d]! * scale;
  }
  return pooled;
}

function softmax(row: Float32Array): Float64Array {
  const max = row.reduce((m, x) => Math.max(m, x), Number.NEGATIVE_INFINITY);
  const exps = Float64Array.from(row, (x) => Math.exp(x - max));
  const total = exps.reduce((s, x) => s + x, 0);
  return exps.map((x) => x / total);
}

function expectLength(what: string, values: { readonly length: number }, expected: number): void {
  if (values.length !== expected)
    throw new RangeError(`${what}: expected ${expected} values, got ${values.length}`);
}
