import type { NamedTensor } from "#core/tensor/tensor.ts";
import type { ServableVersion } from "./model.ts";

/** Under API Gateway's 29 s integration timeout, with room to answer. */
export const DEFAULT_DEADLINE_MS = 25_000;

export interface RunOptions {
  /** A Date.now() time by which the run must have answered; past it the runner gives up with a 504. */
  readonly deadline?: number;
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
