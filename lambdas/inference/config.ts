import * as z from "zod/mini";
import { parseConfig } from "#core/config.ts";
import { defineEnv } from "#core/env-contract.ts";

const MiB = 1024 * 1024;
const positiveInt = z.coerce.number().check(z.int(), z.positive());

/** The inference function's environment: each setting, its variable and how the function reads it. */
export const INFERENCE_ENV = defineEnv({
  registryTable: ["MAAS_REGISTRY_TABLE", z.string().check(z.minLength(1))],
  artifactDir: ["MAAS_ARTIFACT_DIR", z._default(z.string(), "/tmp/maas-artifacts")],
  /** Disk budget for artifacts; keep it under the function's ephemeral storage. */
  artifactCacheBytes: ["MAAS_ARTIFACT_CACHE_BYTES", z._default(positiveInt, 400 * MiB)],
  /**
   * Artifacts up to this size are downloaded into memory (their disk copy written as they arrive) and
   * moved to the session's worker; defaults to an eighth of the function's memory. Streaming to disk
   * first (0) made the cold start of the 50 MB MLP about 120 ms slower (three alternating rounds,
   * medians 777 against 895 ms).
   */
  artifactMemoryBytes: [
    "MAAS_ARTIFACT_MEMORY_BYTES",
    z.optional(z.coerce.number().check(z.int(), z.nonnegative())),
  ],
  /** The most bytes of JSON one infer response may carry; Lambda's synchronous responses stop at 6 MB. */
  maxResponseBytes: ["MAAS_MAX_RESPONSE_BYTES", z._default(positiveInt, 6 * MiB)],
  /**
   * How long one infer request may take before it answers 504; the run is abandoned. Lambda's
   * remaining time, less a second to answer, caps it.
   */
  inferenceDeadlineMs: ["MAAS_INFERENCE_DEADLINE_MS", z._default(positiveInt, 25_000)],
  sessionMax: ["MAAS_SESSION_MAX", z._default(positiveInt, 8)],
  /** Summed artifact bytes of open sessions; defaults to half the function's memory. */
  sessionBytes: ["MAAS_SESSION_BYTES", z.optional(positiveInt)],
  sessionRetryMs: ["MAAS_SESSION_RETRY_MS", z._default(positiveInt, 10_000)],
  registryTtlMs: ["MAAS_REGISTRY_TTL_MS", z._default(positiveInt, 5_000)],
  registryMissTtlMs: ["MAAS_REGISTRY_MISS_TTL_MS", z._default(positiveInt, 1_000)],
  /** Browser origins allowed to call the API, comma-separated, or `*`; none by default. */
  corsOrigins: ["MAAS_CORS_ORIGINS", z.optional(z.string())],
  /** Models a provisioned environment loads while it initializes, comma-separated. */
  preloadModels: ["MAAS_PRELOAD_MODELS", z.optional(z.string())],
  /** The SageMaker endpoint that serves sagemaker-target versions; unset: they answer 503. */
  sagemakerEndpoint: ["MAAS_SAGEMAKER_ENDPOINT", z.optional(z.string().check(z.minLength(1)))],
  /** "multi-model" sends TargetModel; "single-model" names the model in CustomAttributes. */
  sagemakerMode: ["MAAS_SAGEMAKER_MODE", z._default(z.enum(["multi-model", "single-model"]), "multi-model")],
  sagemakerAttemptTimeoutMs: ["MAAS_SAGEMAKER_ATTEMPT_TIMEOUT_MS", z._default(positiveInt, 25_000)],
  /** All attempts of one request, waits included; keep it under API Gateway's 29 s. */
  sagemakerDeadlineMs: ["MAAS_SAGEMAKER_DEADLINE_MS", z._default(positiveInt, 25_000)],
  sagemakerMaxAttempts: ["MAAS_SAGEMAKER_MAX_ATTEMPTS", z._default(positiveInt, 3)],
  /** Asynchronous inference: its jobs table, queue and bucket; without all three its routes answer 501. */
  jobsTable: ["MAAS_JOBS_TABLE", z.optional(z.string().check(z.minLength(1)))],
  jobsQueueUrl: ["MAAS_JOBS_QUEUE_URL", z.optional(z.string().check(z.minLength(1)))],
  asyncBucket: ["MAAS_ASYNC_BUCKET", z.optional(z.string().check(z.minLength(1)))],
  /** Lifetime of the presigned upload and result URLs. */
  asyncUrlExpiresSeconds: ["MAAS_ASYNC_URL_EXPIRES_S", z._default(positiveInt, 3600)],
  /** The largest uploaded request body a job takes: SageMaker asynchronous inference's 1 GB. */
  asyncMaxInputBytes: ["MAAS_ASYNC_MAX_INPUT_BYTES", z._default(positiveInt, 1024 ** 3)],
  /** How long jobs, their inputs and results are kept (the bucket's lifecycle rule says the same). */
  asyncRetentionDays: ["MAAS_ASYNC_RETENTION_DAYS", z._default(positiveInt, 7)],
  /** Where versions that opt in have their requests and responses captured (`capture/`); unset: none are. */
  captureBucket: ["MAAS_CAPTURE_BUCKET", z.optional(z.string().check(z.minLength(1)))],
  /** Captured exchanges waiting for their write to S3; more are dropped (and counted), never queued. */
  captureBufferBytes: ["MAAS_CAPTURE_BUFFER_BYTES", z._default(positiveInt, 16 * MiB)],
});

/** The environment a stack gives the inference function. */
export const inferenceEnvironment = INFERENCE_ENV.environment;

/** Configuration of the inference function, from its environment; a bad value fails the cold start loudly. */
export const inferenceConfigSchema = z.object({
  ...INFERENCE_ENV.shape,
  /** Set by Lambda, not by the stack. */
  AWS_LAMBDA_FUNCTION_MEMORY_SIZE: z.optional(positiveInt),
});

export type InferenceConfig = z.infer<typeof inferenceConfigSchema> & {
  readonly MAAS_SESSION_BYTES: number;
  readonly MAAS_ARTIFACT_MEMORY_BYTES: number;
};

export function loadInferenceConfig(env: Record<string, string | undefined>): InferenceConfig {
  const config = parseConfig(inferenceConfigSchema, env, "inference");
  const memoryMiB = config.AWS_LAMBDA_FUNCTION_MEMORY_SIZE ?? 4096;
  return {
    ...config,
    MAAS_SESSION_BYTES: config.MAAS_SESSION_BYTES ?? (memoryMiB * MiB) / 2,
    MAAS_ARTIFACT_MEMORY_BYTES: config.MAAS_ARTIFACT_MEMORY_BYTES ?? Math.floor((memoryMiB * MiB) / 8),
  };
}
