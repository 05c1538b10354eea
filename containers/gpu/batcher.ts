import type { BatchExecution } from "#core/metrics/statistics.ts";
import type { RunTimings } from "#core/runner.ts";
import type { NamedTensor, TensorData } from "#core/tensor/tensor.ts";

/** Runs a model once: the container's onnxruntime session, or a stand-in in tests. */
export type RunModel = (inputs: readonly NamedTensor[], outputs: readonly string[]) => Promise<NamedTensor[]>;

export interface BatcherOptions {
  /** Most rows (first-dimension entries) in one run; 1 turns batching off. */
  readonly maxBatchSize: number;
  /** Longest the oldest waiting request is held back for batch-mates. */
  readonly maxQueueDelayMs: number;
  /** Runs in progress at once. */
  readonly maxConcurrentBatches: number;
  /** Whether the model takes any first dimension on every input and gives it back on every output. */
  readonly batchable: boolean;
  /** Told of every run that produced outputs, after its callers are answered; must not throw. */
  readonly onExecution?: (execution: ExecutionTimings) => void;
  readonly now?: () => number;
}

/** One run that produced outputs, as Triton counts an execution; its model is the batcher's. */
export type ExecutionTimings = Omit<BatchExecution, "model" | "version">;

/** What the batcher measures for one request: its wait, and the run that answered it. */
export type RequestTimings = Pick<RunTimings, "queueUs" | "inferUs">;

export interface BatcherStats {
  /** Requests submitted. */
  requests: number;
  /** Model runs, merged or not. */
  runs: number;
  /** Runs that served more than one request. */
  mergedRuns: number;
  /** Most rows in one run. */
  largestRun: number;
  /** Merged runs that failed and were re-run request by request. */
  fallbacks: number;
}

interface Pending {
  readonly inputs: readonly NamedTensor[];
  readonly outputs: readonly string[];
  readonly rows: number;
  readonly enqueuedAt: number;
  readonly timings: RequestTimings | undefined;
  readonly resolve: (tensors: NamedTensor[]) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * Dynamic batching for one model, as Triton's dynamic batcher does it: concurrent requests whose
 * inputs agree on names, types and every dimension but the first (and that ask for the same outputs)
 * are stacked along the first dimension, run once, and split back. A run starts when the rows waiting
 * reach `maxBatchSize` or the oldest has waited `maxQueueDelayMs`, and a run slot is free. If a merged
 * run fails, each member is run alone, so one bad request cannot fail its batch-mates.
 */
export class DynamicBatcher {
  readonly #run: RunModel;
  readonly #options: BatcherOptions;
  readonly #now: () => number;
  /** Requests waiting, by compatibility key; a request that cannot be merged gets a unique key. */
  readonly #queues = new Map<string, Pending[]>();
  #active = 0;
  #timer: NodeJS.Timeout | undefined;
  #timerAt = Number.POSITIVE_INFINITY;
  #soloCount = 0;
  readonly stats: BatcherStats = { requests: 0, runs: 0, mergedRuns: 0, largestRun: 0, fallbacks: 0 };

  constructor(run: RunModel, options: BatcherOptions) {
    this.#run = run;
    this.#options = options;
    this.#now = options.now ?? performance.now.bind(performance);
  }

  /** Runs a request in the next batch it fits; `timings`, when given, receives its wait and run. */
  submit(
    inputs: readonly NamedTensor[],
    outputs: readonly string[],
    timings?: RequestTimings,
  ): Promise<NamedTensor[]> {
    this.stats.requests += 1;
    return new Promise((resolve, reject) => {
      const rows = batchRows(inputs);
      const key =
        this.#options.batchable && this.#options.maxBatchSize > 1 && rows !== undefined
          ? compatibilityKey(inputs, outputs)
          : `solo:${this.#soloCount++}`;
      const pending: Pending = {
        inputs,
        outputs,
        rows: rows ?? 1,
        enqueuedAt: this.#now(),
        timings,
        resolve,
        reject,
      };
      const queue = this.#queues.get(key);
      if (queue === undefined) this.#queues.set(key, [pending]);
      else queue.push(pending);
      this.#pump();
    });
  }

  #pump(): void {
    while (this.#active < this.#options.maxConcurrentBatches) {
      const next = this.#nextReady();
      if (next === undefined) break;
      const batch = this.#take(next);
      this.#active += 1;
      void this.#execute(batch).then((settle) => {
        this.#active -= 1;
        // The next run starts before this one's callers are answered: their response encoding then
        // overlaps the model's work instead of delaying it.
        this.#pump();
        settle();
      });
    }
    this.#schedule();
  }

  /** The key of the queue to run now: the one with the oldest head among those that are ready. */
  #nextReady(): string | undefined {
    const now = this.#now();
    let best: { key: string; at: number } | undefined;
    for (const [key, queue] of this.#queues) {
      const head = queue[0]!;
      const ready =
        key.startsWith("solo:") ||
        queuedRows(queue) >= this.#options.maxBatchSize ||
        now - head.enqueuedAt >= this.#options.maxQueueDelayMs;
      if (ready && (best === undefined || head.enqueuedAt < best.at)) best = { key, at: head.enqueuedAt };
    }
    return best?.key;
  }

  /** Takes requests from the head of a queue while they fit in one batch (always at least one). */
  #take(key: string): Pending[] {
    const queue = this.#queues.get(key)!;
    const batch: Pending[] = [queue.shift()!];
    let rows = batch[0]!.rows;
    while (queue.length > 0 && rows + queue[0]!.rows <= this.#options.maxBatchSize) {
      const next = queue.shift()!;
      rows += next.rows;
      batch.push(next);
    }
    if (queue.length === 0) this.#queues.delete(key);
    return batch;
  }

  /** Wakes up when the oldest waiting request's delay runs out, if a slot is free to act on it. */
  #schedule(): void {
    if (this.#active >= this.#options.maxConcurrentBatches) return;
    let earliest = Number.POSITIVE_INFINITY;
    for (const queue of this.#queues.values()) {
      earliest = Math.min(earliest, queue[0]!.enqueuedAt + this.#options.maxQueueDelayMs);
    }
    if (earliest === this.#timerAt) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = earliest;
    if (earliest === Number.POSITIVE_INFINITY) return;
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        this.#timerAt = Number.POSITIVE_INFINITY;
        this.#pump();
      },
      Math.max(0, earliest - this.#now()),
    );
  }

  /** Runs a batch; resolves with what answers its callers (never rejects). */
  async #execute(batch: Pending[]): Promise<() => void> {
    const rows = batch.reduce((sum, item) => sum + item.rows, 0);
    this.stats.runs += 1;
    this.stats.largestRun = Math.max(this.stats.largestRun, rows);
    if (batch.length === 1) return this.#runAlone(batch[0]!);
    this.stats.mergedRuns += 1;
    const first = batch[0]!;
    const startedAt = this.#now();
    let parts: NamedTensor[][];
    let ranAt: number;
    let ranFor: number;
    try {
      const merged = first.inputs.map((input) =>
        concatRows(
          input,
          batch.map((item) => item.inputs.find((candidate) => candidate.name === input.name)!),
        ),
      );
      ranAt = this.#now();
      const results = await this.#run(merged, first.outputs);
      ranFor = this.#now() - ranAt;
      parts = splitRows(
        results,
        batch.map((item) => item.rows),
      );
    } catch {
      // Something in the batch broke the run (or its outputs cannot be split): each request runs
      // alone, so only the request at fault sees an error.
      this.stats.fallbacks += 1;
      for (const item of batch) {
        this.stats.runs += 1;
        (await this.#runAlone(item))();
      }
      return () => undefined;
    }
    const execution: ExecutionTimings = {
      batchSize: rows,
      queueUs: (startedAt - first.enqueuedAt) * 1000,
      computeInputUs: (ranAt - startedAt) * 1000,
      computeInferUs: ranFor * 1000,
      computeOutputUs: (this.#now() - ranAt - ranFor) * 1000,
    };
    for (const item of batch) measure(item, startedAt, ranFor);
    return () => {
      batch.forEach((item, index) => {
        item.resolve(parts[index]!);
      });
      this.#options.onExecution?.(execution);
    };
  }

  async #runAlone(item: Pending): Promise<() => void> {
    const startedAt = this.#now();
    try {
      const outputs = await this.#run(item.inputs, item.outputs);
      const ranFor = this.#now() - startedAt;
      measure(item, startedAt, ranFor);
      const execution: ExecutionTimings = {
        batchSize: item.rows,
        queueUs: (startedAt - item.enqueuedAt) * 1000,
        computeInputUs: 0,
        computeInferUs: ranFor * 1000,
        computeOutputUs: 0,
      };
      return () => {
        item.resolve(outputs);
        this.#options.onExecution?.(execution);
      };
    } catch (error) {
      measure(item, startedAt, this.#now() - startedAt);
      return () => item.reject(error);
    }
  }
}

/** A request's wait until the run that answered it began, and that run's time (in ms, recorded in µs). */
function measure(item: Pending, startedAt: number, ranForMs: number): void {
  if (item.timings === undefined) return;
  item.timings.queueUs = (startedAt - item.enqueuedAt) * 1000;
  item.timings.inferUs = ranForMs * 1000;
}

function queuedRows(queue: readonly Pending[]): number {
  let rows = 0;
  for (const item of queue) rows += item.rows;
  return rows;
}

/** The shared first dimension of every input, or undefined when there is none to batch on. */
function batchRows(inputs: readonly NamedTensor[]): number | undefined {
  if (inputs.length === 0) return undefined;
  const rows = inputs[0]!.dims[0];
  if (rows === undefined || rows < 1) return undefined;
  return inputs.every((input) => input.dims.length > 0 && input.dims[0] === rows) ? rows : undefined;
}

/** Requests with equal keys can be stacked: same inputs (name, type, dims after the first) and outputs. */
function compatibilityKey(inputs: readonly NamedTensor[], outputs: readonly string[]): string {
  const parts = inputs
    .map((input) => `${input.name}:${input.type}:${input.dims.slice(1).join("x")}`)
    .sort()
    .join("|");
  return `${parts}=>${outputs.join(",")}`;
}

function rowSize(dims: readonly number[]): number {
  let size = 1;
  for (let i = 1; i < dims.length; i++) size *= dims[i]!;
  return size;
}

type ArrayLike = Exclude<TensorData, readonly string[]>;

/** Stacks one input of every request along the first dimension. */
function concatRows(first: NamedTensor, parts: readonly NamedTensor[]): NamedTensor {
  const rows = parts.reduce((sum, part) => sum + part.dims[0]!, 0);
  const dims = [rows, ...first.dims.slice(1)];
  if (Array.isArray(first.data)) {
    return { name: first.name, type: first.type, dims, data: parts.flatMap((part) => part.data as string[]) };
  }
  const total = rows * rowSize(first.dims);
  const Typed = (first.data as ArrayLike).constructor as new (length: number) => ArrayLike;
  const data = new Typed(total);
  let offset = 0;
  for (const part of parts) {
    (data as unknown as { set(source: ArrayLike, offset: number): void }).set(part.data as ArrayLike, offset);
    offset += (part.data as ArrayLike).length;
  }
  return { name: first.name, type: first.type, dims, data };
}

/** Splits every output back into each request's rows; throws if an output is not batch-major. */
function splitRows(outputs: readonly NamedTensor[], rows: readonly number[]): NamedTensor[][] {
  const total = rows.reduce((sum, count) => sum + count, 0);
  const parts: NamedTensor[][] = rows.map(() => []);
  for (const output of outputs) {
    if (output.dims[0] !== total) {
      throw new Error(`output '${output.name}' has ${output.dims[0]} rows for a batch of ${total}`);
    }
    const size = rowSize(output.dims);
    let start = 0;
    rows.forEach((count, index) => {
      const end = start + count * size;
      const data = Array.isArray(output.data)
        ? (output.data as readonly string[]).slice(start, end)
        : (output.data as ArrayLike).subarray(start, end);
      parts[index]!.push({
        name: output.name,
        type: output.type,
        dims: [count, ...output.dims.slice(1)],
        data,
      });
      start = end;
    });
  }
  return parts;
}
