import { createRequire } from "node:module";
import { MessageChannel, Worker } from "node:worker_threads";
import type * as Ort from "onnxruntime-node";
import { BackendUnavailableError, DeadlineExceededError } from "#core/errors.ts";
import type { RunTimings } from "#core/runner.ts";
import { ortRunError } from "#core/tensor/ort-tensors.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import type { LocalArtifact } from "./artifact-cache.ts";
import { InlineRuns } from "./inline-runs.ts";
import {
  RunChannel,
  SESSION_WORKER_BUNDLE,
  SESSION_WORKER_SOURCE,
  type SessionDescription,
  type SessionWorkerData,
  type SessionWorkerReply,
  type SessionWorkerRequest,
  SpinWindow,
} from "./session-protocol.ts";

/**
 * The worker's module: its TypeScript source when running from source, the bundled file beside a
 * bundle (lib/maas-function.ts, the container's build and the benches put it there).
 */
const SESSION_WORKER_ENTRY = import.meta.url.endsWith(".ts")
  ? SESSION_WORKER_SOURCE
  : new URL(`./${SESSION_WORKER_BUNDLE}`, import.meta.url);

/** onnxruntime-node's entry, as this module would load it: the worker loads the same copy. */
let ortEntry: string | undefined;
function resolveOrtEntry(): string {
  ortEntry ??= createRequire(import.meta.url).resolve("onnxruntime-node");
  return ortEntry;
}

/** How long a released session's worker has to end by itself before it is terminated. */
const RELEASE_GRACE_MS = 5_000;

/** Workers whose run passed its deadline and is still inside onnxruntime's native code. */
const stuckWorkers = new Set<Worker>();

/**
 * How many runs passed their deadline and are still inside onnxruntime. Nothing can stop native code
 * from outside: such a worker is left to finish its run and is terminated then (terminating it
 * before would abort the process when the run returns into a torn-down thread). Until then
 * process.exit() waits for it, as it joins every worker: a shutdown with stuck runs must end the
 * process by signal.
 */
export function stuckRuns(): number {
  return stuckWorkers.size;
}

/**
 * Ends the process: by exit() normally, by SIGKILL while a stuck run would make exit() wait for it
 * (or, once the run returns, abort). What a shutdown calls once it has closed what it could.
 */
export function exitProcess(code: number): never {
  if (stuckRuns() > 0) {
    process.stderr.write(
      `${stuckRuns()} run(s) past their deadline are still inside onnxruntime: ending by SIGKILL\n`,
    );
    process.kill(process.pid, "SIGKILL");
  }
  process.exit(code);
}

/**
 * Bytes to move to a worker, not clone (cloning 50 MB cost about 400 ms on an earlier build machine):
 * the caller's own bytes as they are (the artifact cache's are), when they span their whole buffer;
 * a copy of a view into a larger one (a pooled Buffer), which moving would take from its other users.
 * The copy costs about 45 ms for 50 MB here, a fifth of that model's cold start.
 */
function movable(artifact: LocalArtifact): string | Uint8Array {
  if (typeof artifact === "string") return artifact;
  const whole = artifact.byteOffset === 0 && artifact.byteLength === artifact.buffer.byteLength;
  return whole && artifact.buffer instanceof ArrayBuffer ? artifact : new Uint8Array(artifact);
}

/** A session's thread, and the channel its runs go to and come back by. */
interface SessionThread {
  readonly worker: Worker;
  readonly runs: RunChannel;
}

/** A worker started ahead of its session (a cold start starts one while S3 sends the artifact). */
let spare: SessionThread | undefined;
let spareOptions: Ort.InferenceSession.SessionOptions | undefined;

function startWorker(options: Ort.InferenceSession.SessionOptions): SessionThread {
  const { port1, port2 } = new MessageChannel();
  const runCounts = RunChannel.counts();
  const data: SessionWorkerData = { ortEntry: resolveOrtEntry(), options, runs: port2, runCounts };
  // A spare never keeps the process alive; open() refs it while loading (its listeners) and unrefs it after.
  const worker = new Worker(SESSION_WORKER_ENTRY, { workerData: data, transferList: [port2] });
  worker.unref();
  return { worker, runs: new RunChannel(port1, runCounts, "session") };
}

/** How WorkerSession.open makes a session. */
export interface OpenOptions {
  /**
   * Let short runs of a small shape-bound model run on this thread instead (inline-runs.ts).
   * @default false
   */
  readonly inline?: boolean;
  /** The longest worker run, in µs, whose shapes then run inline. @default INLINE_LIMIT_US */
  readonly inlineLimitUs?: number;
}

interface PendingRun {
  readonly id: number;
  /** The run's InlineShapes key, when the session may run some shapes inline. */
  readonly shape: string | undefined;
  readonly inputs: readonly NamedTensor[];
  readonly outputs: readonly string[];
  /** What was left of the deadline when the run was asked for. */
  readonly budgetMs: number;
  /** Where the run's queue wait and its time in the worker are added, if the caller measures them. */
  readonly timings: RunTimings | undefined;
  /** performance.now() when the run was asked for, then when it was posted to the worker. */
  mark: number;
  readonly resolve: (outputs: NamedTensor[]) => void;
  readonly reject: (error: Error) => void;
  timer?: NodeJS.Timeout;
}

/** The session could not take the run (its worker is gone): a fresh session may, so a 503 to retry. */
export class SessionLostError extends BackendUnavailableError {
  constructor(message: string) {
    super(`the model is being reloaded (${message}); retry`, 1);
    this.name = "SessionLostError";
  }
}

/**
 * One onnxruntime session in a worker thread of its own. Runs are queued and sent one at a time; a run
 * that passes its deadline fails with a 504 and is abandoned, since onnxruntime offers no way to stop
 * a run from outside: the session is retired (`lost`) and its worker terminated once the run returns.
 * Runs queued behind it fail with SessionLostError, for the caller to retry on a new session. With
 * OpenOptions.inline, a small shape-bound model's short runs are made on this thread (inline-runs.ts).
 */
export class WorkerSession implements SessionDescription {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly inputMetadata: readonly Ort.InferenceSession.ValueMetadata[];
  readonly outputMetadata: readonly Ort.InferenceSession.ValueMetadata[];
  readonly #worker: Worker;
  readonly #runs: RunChannel;
  readonly #inline: InlineRuns | undefined;
  /** How long runs have taken to come back: short ones are polled for rather than waited on. */
  readonly #replies = new SpinWindow();
  readonly #queue: PendingRun[] = [];
  #running: PendingRun | undefined;
  #nextId = 1;
  #lost: Error | undefined;

  private constructor(
    { worker, runs }: SessionThread,
    description: SessionDescription,
    inline: InlineRuns | undefined,
  ) {
    this.#worker = worker;
    this.#runs = runs;
    this.#inline = inline;
    this.inputNames = description.inputNames;
    this.outputNames = description.outputNames;
    this.inputMetadata = description.inputMetadata;
    this.outputMetadata = description.outputMetadata;
    runs.port.on("message", (reply: SessionWorkerReply) => this.#settle(reply));
    // Listening refs a port: a session held in a pool must not keep the process alive.
    runs.port.unref();
    worker.on("error", (error) =>
      this.#lose(new SessionLostError(`the session's worker failed: ${error.message}`)),
    );
    worker.on("exit", () => this.#lose(new SessionLostError("the session's worker exited")));
  }

  /** Starts a worker ahead of the next session, so that its start overlaps other work (a download). */
  static prestart(options: Ort.InferenceSession.SessionOptions): void {
    if (spare !== undefined) return;
    spare = startWorker(options);
    spareOptions = options;
    // A spare that fails is dropped: open() starts its own.
    spare.worker.once("error", () => {
      spare = undefined;
    });
  }

  /**
   * Creates the session in a new worker from a verified local artifact: its path, or its bytes, which
   * are the caller's no more (moved to the worker when they fill their buffer, else copied). Rejects
   * with onnxruntime's message if the model does not load.
   */
  static async open(
    artifact: LocalArtifact,
    options: Ort.InferenceSession.SessionOptions,
    { inline = false, inlineLimitUs }: OpenOptions = {},
  ): Promise<WorkerSession> {
    let thread: SessionThread;
    if (spare !== undefined && spareOptions === options) {
      thread = spare;
      spare = undefined;
    } else {
      thread = startWorker(options);
    }
    const { worker } = thread;
    // Read while the worker loads: the artifact is held for this call only. Bytes are copied at once,
    // before the post below moves them.
    const inlineRuns = inline
      ? InlineRuns.of(artifact, options, inlineLimitUs).catch(() => undefined)
      : undefined;
    const description = await new Promise<SessionDescription>((resolve, reject) => {
      const onMessage = (reply: SessionWorkerReply) => {
        if (reply.kind === "opened") done(() => resolve(reply));
        else if (reply.kind === "failed") done(() => reject(new Error(reply.error.message)));
      };
      const onError = (error: Error) => done(() => reject(error));
      const onExit = (code: number) =>
        done(() => reject(new Error(`session worker exited (${code}) while loading`)));
      const done = (settle: () => void) => {
        worker.off("message", onMessage).off("error", onError).off("exit", onExit);
        settle();
      };
      worker.on("message", onMessage).on("error", onError).on("exit", onExit);
      const request: SessionWorkerRequest = { kind: "open", artifact: movable(artifact) };
      worker.postMessage(
        request,
        typeof request.artifact === "string" ? [] : [request.artifact.buffer as ArrayBuffer],
      );
    }).catch(async (error: unknown) => {
      thread.runs.port.close();
      await worker.terminate();
      throw error;
    });
    const session = new WorkerSession(thread, description, await inlineRuns);
    // Adding 'message' listeners refs a worker: a session held in a pool must not keep the process alive.
    worker.unref();
    return session;
  }

  /** Its runs on this thread, and why it makes none, when it was opened with OpenOptions.inline. */
  get inline(): Pick<InlineRuns, "runs" | "refusal"> | undefined {
    return this.#inline;
  }

  /** Whether the session can no longer run (a run passed its deadline, or its worker died). */
  get lost(): boolean {
    return this.#lost !== undefined;
  }

  /**
   * Runs the model on `inputs` (copied to the worker) for `outputs`; `deadline` is a Date.now() time
   * by which the run, its wait in the queue included, must have answered. `timings` gets the wait before
   * the run was posted to the worker (queue) and the time from then to its outputs (infer).
   */
  run(
    inputs: readonly NamedTensor[],
    outputs: readonly string[],
    deadline: number,
    timings?: RunTimings,
  ): Promise<NamedTensor[]> {
    if (this.#lost !== undefined) return Promise.reject(this.#lost);
    const inline = this.#inline;
    const shape = inline?.key(inputs, outputs);
    if (shape !== undefined) {
      const ran = inline?.run(shape, inputs, outputs, deadline, timings);
      if (ran !== undefined) return ran;
    }
    return new Promise<NamedTensor[]>((resolve, reject) => {
      const budgetMs = Math.max(0, deadline - Date.now());
      const pending: PendingRun = {
        id: this.#nextId++,
        shape,
        inputs,
        outputs,
        budgetMs,
        timings,
        mark: performance.now(),
        resolve,
        reject,
      };
      pending.timer = setTimeout(() => this.#expire(pending), budgetMs);
      this.#queue.push(pending);
      this.#next(true);
    });
  }

  /**
   * Asks the worker to release its session and end, and waits for it to end; terminates it only if
   * it has not within RELEASE_GRACE_MS. Terminating a thread that is inside onnxruntime's binding (a
   * release of a large session takes milliseconds) aborts the process when the call returns.
   */
  async release(): Promise<void> {
    this.#lose(new SessionLostError("the session was released"));
    await this.#inline?.release();
    // A stuck worker is terminated when its run ends (#settle).
    if (stuckWorkers.has(this.#worker)) return;
    const worker = this.#worker;
    const ended = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
    const grace = setTimeout(() => void worker.terminate().catch(() => undefined), RELEASE_GRACE_MS);
    worker.postMessage({ kind: "close" } satisfies SessionWorkerRequest);
    await ended;
    clearTimeout(grace);
  }

  /**
   * Posts the next queued run. `poll`: wait for a short run's reply here (see SpinWindow). Only a run
   * asked for with nothing ahead of it is polled for: a queue drained from #settle goes by events, so
   * that a burst of queued runs cannot hold this thread for the whole burst.
   */
  #next(poll: boolean): void {
    if (this.#running !== undefined) return;
    const pending = this.#queue.shift();
    if (pending === undefined) return;
    this.#running = pending;
    const posted = performance.now();
    if (pending.timings !== undefined) {
      pending.timings.queueUs += (posted - pending.mark) * 1000;
      pending.timings.spans?.push({ name: "queue", start: pending.mark, end: posted });
    }
    pending.mark = posted;
    const request: SessionWorkerRequest = {
      kind: "run",
      id: pending.id,
      inputs: pending.inputs,
      outputs: pending.outputs,
    };
    this.#runs.post(request);
    if (!poll) return;
    const reply = this.#runs.poll(this.#replies.us) as SessionWorkerReply | undefined;
    if (reply !== undefined) this.#settle(reply);
  }

  #settle(reply: SessionWorkerReply): void {
    if (stuckWorkers.delete(this.#worker)) {
      // The abandoned run is over: the thread is back in JavaScript, where terminating it is safe.
      void this.#worker.terminate().catch(() => undefined);
      return;
    }
    const pending = this.#running;
    if (pending === undefined || !("id" in reply) || reply.id !== pending.id) return;
    this.#running = undefined;
    clearTimeout(pending.timer);
    const ran = performance.now();
    this.#replies.observe((ran - pending.mark) * 1000);
    if (reply.kind === "ran" && pending.shape !== undefined)
      this.#inline?.observe(pending.shape, reply.runUs);
    if (pending.timings !== undefined) {
      pending.timings.inferUs += (ran - pending.mark) * 1000;
      pending.timings.spans?.push({ name: "run", start: pending.mark, end: ran });
    }
    if (reply.kind === "ran") pending.resolve(reply.outputs);
    else if (reply.kind === "failed") pending.reject(ortRunError(new Error(reply.error.message)));
    this.#next(false);
  }

  #expire(pending: PendingRun): void {
    const waited = this.#queue.indexOf(pending);
    if (waited >= 0) {
      this.#queue.splice(waited, 1);
      pending.reject(
        new DeadlineExceededError(`the request waited ${pending.budgetMs} ms for the model, its deadline`),
      );
      return;
    }
    if (this.#running !== pending) return;
    this.#running = undefined;
    // The thread stays inside onnxruntime until its run ends; the session goes with it.
    stuckWorkers.add(this.#worker);
    this.#worker.once("exit", () => stuckWorkers.delete(this.#worker));
    pending.reject(
      new DeadlineExceededError(
        `the model ran past the request's deadline (${pending.budgetMs} ms); the run was abandoned`,
      ),
    );
    this.#lose(new SessionLostError("the session's previous run passed its deadline"));
  }

  #lose(error: Error): void {
    if (this.#lost !== undefined) return;
    this.#lost = error;
    const waiting = [...(this.#running === undefined ? [] : [this.#running]), ...this.#queue.splice(0)];
    this.#running = undefined;
    for (const pending of waiting) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
  }
}
