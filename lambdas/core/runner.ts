import type { Span } from "#core/metrics/span.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import type { ServableVersion } from "./model.ts";

/** Under API Gateway's 29 s integration timeout, with room to answer. */
export const DEFAULT_DEADLINE_MS = 25_000;

/**
 * How a run went, in µs: a runner adds to these fields when its caller passes them (RunOptions.timings),
 * so that measuring costs nothing on the return path. The inference metric event is one.
 */
export interface RunTimings {
  /** Waiting for the model: the session's queue (time before the run was handed to it). */
  queueUs: number;
  /** The run, from handing the model its inputs to having its outputs. */
  inferUs: number;
  /** Fetching the artifact, when this run loaded the model; 0 otherwise. */
  artifactFetchUs: number;
  /** Creating the session, when this run loaded the model; 0 otherwise. */
  sessionCreateUs: number;
  /** Where each phase also goes as a span, when the request is traced. */
  readonly spans: Span[] | undefined;
}

export interface RunOptions {
  /** A Date.now() time by which the run must have answered; past it the runner gives up with a 504. */
  readonly deadline?: number;
  /** Where the runner reports its phases, if the caller measures them. */
  readonly timings?: RunTimings | undefined;
}

/** Runs a version of a model on some backend: onnxruntime in this function, or a SageMaker endpoint. */
export interface ModelRunner {
  readonly backend: "lambda" | "sagemaker";
  run(
    version: ServableVersion,
    inputs: readonly NamedTensor[],
    outputs: readonly string[],
    options?: RunOptions,
  ): Promise<NamedTensor[]>;
  /** Loads the version ahead of traffic (provisioned environments, the local demo). */
  load?(version: ServableVersion): Promise<void>;
}
