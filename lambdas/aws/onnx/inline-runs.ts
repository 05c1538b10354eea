import { readFile, stat } from "node:fs/promises";
import type * as Ort from "onnxruntime-node";
import { DeadlineExceededError } from "#core/errors.ts";
import type { RunTimings } from "#core/runner.ts";
import { ortRunError, runOrtSession } from "#core/tensor/ort-tensors.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import type { LocalArtifact } from "./artifact-cache.ts";
import { loadOrt } from "./ort.ts";

/** The longest run in the worker (its thread hops left out) for which an input shape may run inline. */
export const INLINE_LIMIT_US = 500;
/** Models up to this size may keep a second session on the function's thread. */
export const INLINE_MAX_MODEL_BYTES = 4 * 1024 * 1024;
/** Worker runs in a row within the limit before a shape runs inline. */
const QUALIFYING_RUNS = 3;
/** Inline runs in a row over DEMOTE_FACTOR × the limit that send a shape back to the worker, for good. */
const DEMOTING_RUNS = 2;
const DEMOTE_FACTOR = 4;
/** Shapes tracked per model; runs of others go to the worker. */
const MAX_SHAPES = 64;

interface ShapeRecord {
  /** Worker runs in a row within the limit. */
  short: number;
  /** Inline runs in a row over DEMOTE_FACTOR × the limit: at DEMOTING_RUNS, it stays there. */
  slow: number;
}

/**
 * Which input shapes of a shape-bound model (shape-bound.ts) run on the function's own thread: those
 * whose last QUALIFYING_RUNS runs on the worker each took at most the limit. A shape-bound model does
 * about the same work for any values of the same shapes, so such a run holds this thread about as long.
 * A constant factor remains (denormal floats, a tree's path): a shape whose inline runs turn slow
 * goes back to the worker for good.
 */
export class InlineShapes {
  readonly #limitUs: number;
  readonly #shapes = new Map<string, ShapeRecord>();

  constructor(limitUs = INLINE_LIMIT_US) {
    this.#limitUs = limitUs;
  }

  /** The inputs' names and shapes and the outputs asked for, as one key. */
  static key(inputs: readonly NamedTensor[], outputs: readonly string[]): string {
    let key = outputs.join(",");
    for (const input of inputs) key += `;${input.name}:${input.dims.join("x")}`;
    return key;
  }

  allows(key: string): boolean {
    const record = this.#shapes.get(key);
    return record !== undefined && record.slow < DEMOTING_RUNS && record.short >= QUALIFYING_RUNS;
  }

  /** A run of `key` took `us` in the worker. */
  observeWorker(key: string, us: number): void {
    let record = this.#shapes.get(key);
    if (record === undefined) {
      if (this.#shapes.size >= MAX_SHAPES) return;
      record = { short: 0, slow: 0 };
      this.#shapes.set(key, record);
    }
    record.short = us <= this.#limitUs ? record.short + 1 : 0;
  }

  /** A run of `key` on this thread took `us`. */
  observeInline(key: string, us: number): void {
    const record = this.#shapes.get(key);
    if (record === undefined || record.slow >= DEMOTING_RUNS) return;
    record.slow = us > DEMOTE_FACTOR * this.#limitUs ? record.slow + 1 : 0;
  }
}

/**
 * A small model's second session, on the function's own thread, for the input shapes InlineShapes
 * allows: such a run skips the two thread hops to the session's worker (worker-session.ts), most of a
 * short model's overhead. The session is made when a first shape qualifies, and only if the model is
 * shape-bound; until then, and for good if it is not, every run goes to the worker.
 */
export class InlineRuns {
  readonly #shapes: InlineShapes;
  readonly #options: Ort.InferenceSession.SessionOptions;
  /** The model's bytes, until the first qualifying shape starts making its session. */
  #bytes: Uint8Array | undefined;
  #session: Ort.InferenceSession | undefined;
  #refusal: string | undefined;
  #runs = 0;

  private constructor(bytes: Uint8Array, options: Ort.InferenceSession.SessionOptions, limitUs?: number) {
    this.#bytes = bytes;
    this.#options = options;
    this.#shapes = new InlineShapes(limitUs);
  }

  /**
   * For an artifact of at most INLINE_MAX_MODEL_BYTES, else undefined. Bytes are copied before this
   * returns, so the caller may then move its own to a worker; a file is read.
   */
  static of(
    artifact: LocalArtifact,
    options: Ort.InferenceSession.SessionOptions,
    limitUs?: number,
  ): Promise<InlineRuns | undefined> {
    if (typeof artifact === "string") return InlineRuns.#read(artifact, options, limitUs);
    const small = artifact.byteLength <= INLINE_MAX_MODEL_BYTES;
    return Promise.resolve(small ? new InlineRuns(new Uint8Array(artifact), options, limitUs) : undefined);
  }

  static async #read(
    path: string,
    options: Ort.InferenceSession.SessionOptions,
    limitUs: number | undefined,
  ): Promise<InlineRuns | undefined> {
    if ((await stat(path)).size > INLINE_MAX_MODEL_BYTES) return undefined;
    return new InlineRuns(await readFile(path), options, limitUs);
  }

  /** Why the model never runs inline (not shape-bound, or its session failed), once that is known. */
  get refusal(): string | undefined {
    return this.#refusal;
  }

  /** Runs made on this thread so far. */
  get runs(): number {
    return this.#runs;
  }

  /** The key of the run's shapes, to pass to `run` and `observe`; undefined once the model is refused. */
  key(inputs: readonly NamedTensor[], outputs: readonly string[]): string | undefined {
    return this.#refusal === undefined ? InlineShapes.key(inputs, outputs) : undefined;
  }

  /** A run on this thread, if its shapes may; else undefined, and the worker runs it. */
  run(
    key: string,
    inputs: readonly NamedTensor[],
    outputs: readonly string[],
    deadline: number,
    timings: RunTimings | undefined,
  ): Promise<NamedTensor[]> | undefined {
    if (!this.#shapes.allows(key)) return undefined;
    const session = this.#session;
    if (session === undefined) {
      void this.#open();
      return undefined;
    }
    if (Date.now() >= deadline)
      return Promise.reject(new DeadlineExceededError("the request's deadline passed before the model ran"));
    return this.#run(session, key, inputs, outputs, timings);
  }

  /** A run of `key` took `us` in the worker. */
  observe(key: string, us: number): void {
    this.#shapes.observeWorker(key, us);
  }

  async release(): Promise<void> {
    this.#bytes = undefined;
    this.#refusal ??= "the session was released";
    const session = this.#session;
    this.#session = undefined;
    await session?.release();
  }

  async #run(
    session: Ort.InferenceSession,
    key: string,
    inputs: readonly NamedTensor[],
    outputs: readonly string[],
    timings: RunTimings | undefined,
  ): Promise<NamedTensor[]> {
    this.#runs++;
    const started = performance.now();
    try {
      return await runOrtSession(loadOrt(), session, inputs, outputs);
    } catch (error) {
      throw ortRunError(error);
    } finally {
      const ran = performance.now();
      this.#shapes.observeInline(key, (ran - started) * 1000);
      if (timings !== undefined) {
        timings.inferUs += (ran - started) * 1000;
        timings.spans?.push({ name: "run", start: started, end: ran });
      }
    }
  }

  /**
   * Checks that the model is shape-bound, then makes its session; either failing refuses it. Once only:
   * the bytes are taken at the start, and later calls find none.
   */
  async #open(): Promise<void> {
    const bytes = this.#bytes;
    this.#bytes = undefined;
    if (bytes === undefined) return;
    try {
      // Loaded only here, and beside the function's bundle rather than in it (lib/lazy-modules.ts): the
      // ONNX schema's decoder is 113 KB of JavaScript that a cold start would otherwise parse.
      const [{ default: onnxProto }, { shapeBound }] = await Promise.all([
        import("onnx-proto"),
        import("#core/onnx/shape-bound.ts"),
      ]);
      const verdict = shapeBound(onnxProto.onnx.ModelProto.decode(bytes));
      if (!verdict.bound) {
        this.#refusal = verdict.reason;
        return;
      }
      const session = await loadOrt().InferenceSession.create(bytes, this.#options);
      if (this.#refusal === undefined) this.#session = session;
      else await session.release();
    } catch (error) {
      this.#refusal = `its session on this thread failed: ${error instanceof Error ? error.message : String(error)}`;
    }
  }
}
