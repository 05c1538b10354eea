import { availableParallelism } from "node:os";
import { z } from "zod";

const positiveInt = z.coerce.number().int().positive();
const PROVIDERS = ["cuda", "webgpu", "cpu"] as const;
export type ExecutionProviderName = (typeof PROVIDERS)[number];

/** The GPU container's settings, from its environment; a bad value stops the container at start. */
export const gpuServerConfigSchema = z.object({
  /** SageMaker sets SAGEMAKER_BIND_TO_PORT where the image declares accept-bind-to-port. */
  SAGEMAKER_BIND_TO_PORT: z.coerce.number().int().min(0).max(65_535).optional(),
  MAAS_PORT: z.coerce.number().int().min(0).max(65_535).default(8080),
  MAAS_HOST: z.string().default("0.0.0.0"),
  /**
   * Where models are looked up by target: SageMaker extracts multi-model archives under
   * /opt/ml/models and a single model's data into /opt/ml/model.
   */
  MAAS_MODEL_DIRS: z.string().default("/opt/ml/models,/opt/ml/model"),
  /**
   * The model prefix in S3 (`s3://bucket/prefix/`): a target found in no model directory is downloaded
   * from `<prefix><target>` on first use. For single-model endpoints, where SageMaker copies model data
   * only when the endpoint is created. Unset: model directories only.
   */
  MAAS_MODEL_S3_URI: z
    .string()
    .regex(/^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?$/, "expected s3://<bucket>/<prefix>")
    .optional(),
  /** Where a `.tar.gz` found as is in a model directory, or downloaded, is extracted. */
  MAAS_SCRATCH_DIR: z.string().default("/tmp/maas-models"),
  /** Tried in order at start; the first that can run a tiny model serves every model. */
  MAAS_EXECUTION_PROVIDERS: z
    .string()
    .default(PROVIDERS.join(","))
    .transform((value) => value.split(",").map((name) => name.trim()))
    .pipe(z.array(z.enum(PROVIDERS)).min(1)),
  /** Rows stacked into one run; 1 turns batching off. */
  MAAS_MAX_BATCH_SIZE: positiveInt.default(32),
  /** How long the first request of a batch waits for others. */
  MAAS_MAX_QUEUE_DELAY_MS: z.coerce.number().nonnegative().default(2),
  /** Runs of one model at a time; more overlaps copies and compute on a GPU. */
  MAAS_MAX_CONCURRENT_BATCHES: positiveInt.default(1),
  /** Budget for loaded models, estimated as file size x MAAS_MODEL_MEMORY_FACTOR. @default 90% of the GPU's memory, or half the RAM on CPU */
  MAAS_MEMORY_BUDGET_BYTES: positiveInt.optional(),
  MAAS_MODEL_MEMORY_FACTOR: z.coerce.number().min(1).default(1.5),
  MAAS_INTRA_OP_THREADS: positiveInt.default(availableParallelism()),
  /**
   * Whether idle onnxruntime CPU threads spin. Off by default: spinning threads take the cores the
   * HTTP and JSON work of the next batch needs (it matters on CPU only).
   */
  MAAS_INTRA_OP_SPINNING: z.enum(["0", "1"]).default("0"),
  /** How long one model run may take before its request answers 504 and the run is abandoned. */
  MAAS_INFERENCE_DEADLINE_MS: positiveInt.default(25_000),
  MAAS_MAX_BODY_BYTES: positiveInt.default(32 * 1024 * 1024),
});

export type GpuServerConfig = z.infer<typeof gpuServerConfigSchema>;

export function loadGpuServerConfig(env: Record<string, string | undefined>): GpuServerConfig {
  const result = gpuServerConfigSchema.safeParse(env);
  if (!result.success) {
    const details = result.error.issues
      .map((issue) => `${issue.path.join(".")}: ${issue.message}`)
      .join("; ");
    throw new Error(`invalid GPU container configuration: ${details}`);
  }
  return result.data;
}

export function listenPort(config: GpuServerConfig): number {
  return config.SAGEMAKER_BIND_TO_PORT ?? config.MAAS_PORT;
}
