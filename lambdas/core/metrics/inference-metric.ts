import type { ServingTarget } from "#core/model.ts";
import type { RunTimings } from "#core/runner.ts";
import { type FailureReason, failureReason } from "./names.ts";
import type { Span } from "./span.ts";

export type InferenceOutcome = "success" | "failure";

/**
 * One synchronous infer request, as every metric writer sees it (CloudWatch EMF in AWS, Triton's
 * statistics and Prometheus text locally). Filled in as the request goes (one object, one shape), and
 * recorded once its response has been handed back. Durations in µs.
 */
export interface InferenceMetric extends RunTimings {
  /** The model, once the registry has resolved the request to one of its versions; a name a caller made up is never a label. */
  model: string | undefined;
  version: number | undefined;
  backend: ServingTarget | undefined;
  outcome: InferenceOutcome;
  /** Why it failed (from its status); undefined on success. */
  reason: FailureReason | undefined;
  /** From the handler's first line to the response ready to return. */
  totalUs: number;
  /** Resolving the model and version in the registry (cached). */
  registryUs: number;
  /** Reading the request: body decoding, parsing, the signature check and the tensors' decoding. */
  inputDecodeUs: number;
  /** Writing the response: the V2 JSON or binary tensor data, and its base64 for API Gateway. */
  outputEncodeUs: number;
  /** Inferences in the request: the first dimension of its first input, or 1 (Triton's inference_count). */
  batchSize: number;
  requestBytes: number;
  responseBytes: number;
  /** The first inference request this environment served. */
  coldStart: boolean;
  /** On a cold start: the environment's initialization, from the runtime's start to the handler's module loaded; else 0. */
  initUs: number;
  /** When the request was recorded, as a Date.now() time (Triton's last_inference). */
  timestamp: number;
  /** The request's spans when it is traced (RequestTracing), else undefined. */
  spans: Span[] | undefined;
}

/** Receives each infer request's metric after its response: it must not throw, and should not block. */
export interface MetricsSink {
  record(metric: Readonly<InferenceMetric>): void;
}

/** A metric to fill in: every field present from the start, so every request's object has one shape. */
export function newInferenceMetric(): InferenceMetric {
  return {
    model: undefined,
    version: undefined,
    backend: undefined,
    outcome: "success",
    reason: undefined,
    totalUs: 0,
    registryUs: 0,
    queueUs: 0,
    inputDecodeUs: 0,
    inferUs: 0,
    outputEncodeUs: 0,
    artifactFetchUs: 0,
    sessionCreateUs: 0,
    batchSize: 0,
    requestBytes: 0,
    responseBytes: 0,
    coldStart: false,
    initUs: 0,
    timestamp: 0,
    spans: undefined,
  };
}

/** Sets the outcome from the response's status: 2xx is a success, anything else a failure with its reason. */
export function settleOutcome(metric: InferenceMetric, status: number): void {
  if (status >= 200 && status < 300) {
    metric.outcome = "success";
    metric.reason = undefined;
  } else {
    metric.outcome = "failure";
    metric.reason = failureReason(status);
  }
}

/** Bytes of an API Gateway body: base64 is measured without decoding it. */
export function bodyBytes(body: string | null | undefined, base64: boolean | undefined): number {
  if (body == null || body.length === 0) return 0;
  if (!base64) return Buffer.byteLength(body, "utf8");
  const padding = body.endsWith("==") ? 2 : body.endsWith("=") ? 1 : 0;
  return Math.floor(body.length / 4) * 3 - padding;
}
