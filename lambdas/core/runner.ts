import type { NamedTensor } from "#core/tensor/tensor.ts";
import type { ServableVersion } from "./model.ts";

/** Runs a version of a model on some backend: onnxruntime in this function, or a SageMaker endpoint. */
export interface ModelRunner {
  readonly backend: "lambda" | "sagemaker";
  run(
    version: ServableVersion,
    inputs: readonly NamedTensor[],
    outputs: readonly string[],
  ): Promise<NamedTensor[]>;
  /** Loads the version ahead of traffic (provisioned environments, the local demo). */
  load?(version: ServableVersion): Promise<void>;
}
