/**
 * The one vocabulary of metrics every part of the service emits (the inference function, the workers
 * and the GPU container), whatever writes them: CloudWatch EMF in AWS, Prometheus text and Triton's
 * statistics locally. The dashboard (lib/) and the local exporters read these names, not string copies.
 */

/** The CloudWatch namespace of every metric. */
export const METRICS_NAMESPACE = "ServerlessMaaS";

/**
 * Dimensions. Per model and version only: no per-caller or per-request dimension, since each distinct
 * combination is a custom metric CloudWatch bills by the month.
 */
export const METRIC_DIMENSIONS = {
  model: "model",
  version: "version",
  backend: "backend",
  /** On failures only: one of FAILURE_REASONS. */
  reason: "reason",
  /** On registration and optimization outcomes. */
  outcome: "outcome",
} as const;

/** Why a request failed, from its status and error code. */
export const FAILURE_REASONS = ["caller_error", "not_ready", "throttled", "timeout", "internal"] as const;
export type FailureReason = (typeof FAILURE_REASONS)[number];

export function failureReason(status: number): FailureReason {
  if (status === 429) return "throttled";
  if (status === 504 || status === 408) return "timeout";
  if (status === 503) return "not_ready";
  if (status >= 400 && status < 500) return "caller_error";
  return "internal";
}

/** One figure of METRICS: its CloudWatch name and unit. */
export type MetricSpec = (typeof METRICS)[keyof typeof METRICS];

/** CloudWatch metric names (EMF), with their units. */
export const METRICS = {
  requests: { name: "InferenceRequests", unit: "Count" },
  successes: { name: "InferenceSuccess", unit: "Count" },
  /** With the `reason` dimension. */
  failures: { name: "InferenceFailure", unit: "Count" },
  latency: { name: "RequestLatency", unit: "Milliseconds" },
  registryLatency: { name: "RegistryLatency", unit: "Milliseconds" },
  /** Time waiting for the model (its session's queue, or the GPU container's batcher). */
  queueLatency: { name: "QueueLatency", unit: "Milliseconds" },
  artifactFetchLatency: { name: "ArtifactFetchLatency", unit: "Milliseconds" },
  sessionCreateLatency: { name: "SessionCreateLatency", unit: "Milliseconds" },
  inputDecodeLatency: { name: "InputDecodeLatency", unit: "Milliseconds" },
  runLatency: { name: "RunLatency", unit: "Milliseconds" },
  outputEncodeLatency: { name: "OutputEncodeLatency", unit: "Milliseconds" },
  requestBytes: { name: "RequestBytes", unit: "Bytes" },
  responseBytes: { name: "ResponseBytes", unit: "Bytes" },
  coldStarts: { name: "ColdStart", unit: "Count" },
  initDuration: { name: "InitDuration", unit: "Milliseconds" },
  batchSize: { name: "BatchSize", unit: "Count" },
  batchQueueDelay: { name: "BatchQueueDelay", unit: "Milliseconds" },
  /** With the `outcome` dimension (registered, rejected, failed...). */
  registrations: { name: "Registrations", unit: "Count" },
  registrationDuration: { name: "RegistrationDuration", unit: "Milliseconds" },
  /** With the `outcome` dimension. */
  optimizations: { name: "Optimizations", unit: "Count" },
  optimizationDuration: { name: "OptimizationDuration", unit: "Milliseconds" },
  /** Asynchronous jobs' runs, with the `outcome` dimension (pipeline-names.ts JOB_OUTCOMES). */
  jobs: { name: "Jobs", unit: "Count" },
  /** One receive's run, from the message to the job's record. */
  jobDuration: { name: "JobDuration", unit: "Milliseconds" },
  /** From the job's queueing (submission, or its retry's) to the run that picked it up. */
  jobQueueWait: { name: "JobQueueWait", unit: "Milliseconds" },
} as const;

/**
 * Triton's Prometheus names (its docs/user_guide/metrics.md), each with `model` and `version` labels;
 * `maas_` ones for what Triton has no name for.
 */
export const PROMETHEUS = {
  success: "nv_inference_request_success",
  /** With a `reason` label. */
  failure: "nv_inference_request_failure",
  inferenceCount: "nv_inference_count",
  execCount: "nv_inference_exec_count",
  requestDuration: "nv_inference_request_duration_us",
  queueDuration: "nv_inference_queue_duration_us",
  computeInput: "nv_inference_compute_input_duration_us",
  computeInfer: "nv_inference_compute_infer_duration_us",
  computeOutput: "nv_inference_compute_output_duration_us",
  /** Resolving the model and version in the registry (cached). */
  registryDuration: "maas_registry_duration_us",
  /** With a `reason` label only: infer requests that failed before a model version was resolved. */
  unresolvedFailure: "maas_unresolved_request_failure_total",
  coldStarts: "maas_cold_start_total",
  artifactFetchDuration: "maas_artifact_fetch_duration_us",
  sessionCreateDuration: "maas_session_create_duration_us",
  requestBytes: "maas_request_bytes_total",
  responseBytes: "maas_response_bytes_total",
  /** Registration, optimization and job outcomes: `model`, `version` and `outcome` labels; durations in µs. */
  registrations: "maas_registration_total",
  registrationDuration: "maas_registration_duration_us",
  optimizations: "maas_optimization_total",
  optimizationDuration: "maas_optimization_duration_us",
  jobs: "maas_job_total",
  jobDuration: "maas_job_duration_us",
  jobQueueDuration: "maas_job_queue_duration_us",
  /** Batch executions by their size (a `batch_size` label): Triton has no family for its batch_stats. */
  batchExecutions: "maas_batch_execution_total",
  /** How long each batch execution's oldest request waited for batch-mates before the run began. */
  batchQueueDuration: "maas_batch_queue_duration_us",
} as const;
