import * as z from "zod";
import { parseConfig } from "#core/config.ts";

const MiB = 1024 * 1024;
const positiveInt = z.coerce.number().int().positive();

/** Configuration of the inference function, from its environment; a bad value fails the cold start loudly. */
export const inferenceConfigSchema = z.object({
  MAAS_REGISTRY_TABLE: z.string().min(1),
  MAAS_ARTIFACT_DIR: z.string().default("/tmp/maas-artifacts"),
  /** Disk budget for artifacts; keep it under the function's ephemeral storage. */
  MAAS_ARTIFACT_CACHE_BYTES: positiveInt.default(400 * MiB),
  /**
   * Artifacts up to this size are downloaded into memory and the session created from the bytes
   * while the disk copy is written behind; defaults to an eighth of the function's memory.
   */
  MAAS_ARTIFACT_MEMORY_BYTES: z.coerce.number().int().nonnegative().optional(),
  MAAS_SESSION_MAX: positiveInt.default(8),
  /** Summed artifact bytes of open sessions; defaults to half the function's memory. */
  MAAS_SESSION_BYTES: positiveInt.optional(),
  MAAS_SESSION_RETRY_MS: positiveInt.default(10_000),
  MAAS_REGISTRY_TTL_MS: positiveInt.default(5_000),
  MAAS_REGISTRY_MISS_TTL_MS: positiveInt.default(1_000),
  AWS_LAMBDA_FUNCTION_MEMORY_SIZE: positiveInt.optional(),
  /** Browser origins allowed to call the API, comma-separated, or `*`; none by default. */
  MAAS_CORS_ORIGINS: z.string().optional(),
  /** Models a provisioned environment loads while it initializes, comma-separated. */
  MAAS_PRELOAD_MODELS: z.string().optional(),
  /** The SageMaker endpoint that serves sagemaker-target versions; unset: they answer 503. */
  MAAS_SAGEMAKER_ENDPOINT: z.string().min(1).optional(),
  /** "multi-model" sends TargetModel; "single-model" names the model in CustomAttributes. */
  MAAS_SAGEMAKER_MODE: z.enum(["multi-model", "single-model"]).default("multi-model"),
  MAAS_SAGEMAKER_ATTEMPT_TIMEOUT_MS: positiveInt.default(25_000),
  /** All attempts of one request, waits included; keep it under API Gateway's 29 s. */
  MAAS_SAGEMAKER_DEADLINE_MS: positiveInt.default(25_000),
  MAAS_SAGEMAKER_MAX_ATTEMPTS: positiveInt.default(3),
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
