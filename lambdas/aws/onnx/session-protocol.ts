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
}

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
  | { readonly kind: "ran"; readonly id: number; readonly outputs: NamedTensor[] }
  /** id 0: opening the session failed. */
  | { readonly kind: "failed"; readonly id: number; readonly error: { readonly message: string } };
