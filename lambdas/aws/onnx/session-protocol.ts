import { type MessagePort, receiveMessageOnPort } from "node:worker_threads";
import type * as Ort from "onnxruntime-node";
import type { NamedTensor } from "#core/tensor/tensor.ts";

/** The worker's source, and the file a bundle carries beside its entry for it (worker-session.ts loads it). */
export const SESSION_WORKER_SOURCE = new URL("./session-worker.ts", import.meta.url);
export const SESSION_WORKER_BUNDLE = "session-worker.mjs";

/** What a session worker (session-worker.ts) is started with. */
export interface SessionWorkerData {
  /** onnxruntime-node's entry file, resolved by the thread that starts the worker. */
  readonly ortEntry: string;
  readonly options: Ort.InferenceSession.SessionOptions;
  /** The worker's end of the session's RunChannel: run requests come in on it, their replies go out. */
  readonly runs: MessagePort;
  readonly runCounts: SharedArrayBuffer;
}

/** Requests to a session worker: open and close on its parent port, runs on its `runs` port. */
export type SessionWorkerRequest =
  | { readonly kind: "open"; readonly artifact: string | Uint8Array }
  | {
      readonly kind: "run";
      readonly id: number;
      readonly inputs: readonly NamedTensor[];
      readonly outputs: readonly string[];
    }
  | { readonly kind: "close" };

/** The metadata a session reports of its inputs and outputs, as onnxruntime gives it. */
export interface SessionDescription {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly inputMetadata: readonly Ort.InferenceSession.ValueMetadata[];
  readonly outputMetadata: readonly Ort.InferenceSession.ValueMetadata[];
}

export type SessionWorkerReply =
  | { readonly kind: "started" }
  | ({ readonly kind: "opened" } & SessionDescription)
  /** runUs: the run in the worker, its inputs' and outputs' conversions included. */
  | { readonly kind: "ran"; readonly id: number; readonly outputs: NamedTensor[]; readonly runUs: number }
  /** id 0: opening the session failed. */
  | { readonly kind: "failed"; readonly id: number; readonly error: { readonly message: string } };

/**
 * How long one side of a session polls for the other's next message before it parks in its event
 * loop, from how long that message took to come recently. Waking a parked thread costs a scheduler
 * hop each way (about 80 µs each on the 2-core build machine, against a 50 µs iris run), so a side that
 * expects an answer soon polls for it, as onnxruntime's own pool threads spin before they sleep.
 * Nothing is polled for when waits are typically longer than the limit, nor before one was seen.
 */
export class SpinWindow {
  static readonly LIMIT_US = 1000;
  #typicalUs: number | undefined;

  /** Adds one wait's length, in µs, to the running average (each new wait weighs one eighth). */
  observe(waitedUs: number): void {
    this.#typicalUs =
      this.#typicalUs === undefined ? waitedUs : this.#typicalUs + (waitedUs - this.#typicalUs) / 8;
  }

  /** How long to poll for the next message, in µs: 0 when it is not expected within the limit. */
  get us(): number {
    const typical = this.#typicalUs;
    if (typical === undefined || typical > SpinWindow.LIMIT_US) return 0;
    return Math.min(2 * typical + 50, SpinWindow.LIMIT_US);
  }
}

/**
 * The port that a session's runs go to its worker by and come back by, with a count of the messages
 * each side has posted in shared memory. Each side posts, then may poll for the other's answer: it
 * watches the other's count move past where it stood at the post, and takes the message off the port
 * only then. Polling the port itself takes its lock on every call, which the other side needs to post
 * (it made the iris hop about 60 µs slower here).
 */
export class RunChannel {
  readonly port: MessagePort;
  readonly #counts: Int32Array;
  readonly #mine: number;
  readonly #theirs: number;
  /** The other end's count when this end last posted: its answer takes it past this. */
  #theirsAtPost = 0;

  /** `counts`: two 32-bit counters, shared by both ends; the session's end posts on the first. */
  constructor(port: MessagePort, counts: SharedArrayBuffer, end: "session" | "worker") {
    this.port = port;
    this.#counts = new Int32Array(counts, 0, 2);
    this.#mine = end === "session" ? 0 : 1;
    this.#theirs = 1 - this.#mine;
  }

  /** Two counters' worth of shared memory, for both ends of one channel. */
  static counts(): SharedArrayBuffer {
    return new SharedArrayBuffer(2 * Int32Array.BYTES_PER_ELEMENT);
  }

  post(message: SessionWorkerRequest | SessionWorkerReply, transfer: ArrayBuffer[] = []): void {
    // Read before posting: the answer may come, and move the count, before postMessage returns.
    this.#theirsAtPost = Atomics.load(this.#counts, this.#theirs);
    this.port.postMessage(message, transfer);
    Atomics.add(this.#counts, this.#mine, 1);
  }

  /**
   * The other end's answer to this end's last post if it comes within `us` µs (this thread busy
   * meanwhile), else undefined: it comes by the port's 'message' event instead.
   */
  poll(us: number): unknown {
    if (us <= 0) return undefined;
    const until = performance.now() + us / 1000;
    while (Atomics.load(this.#counts, this.#theirs) === this.#theirsAtPost) {
      if (performance.now() >= until) return undefined;
    }
    return receiveMessageOnPort(this.port)?.message;
  }
}
