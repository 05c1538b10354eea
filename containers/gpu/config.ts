import { availableParallelism } from "node:os";
import { z } from "zod";

const positiveInt = z.coerce.number().int().positive();
const port = z.coerce.number().int().min(0).max(65_535);
/** Triton's metrics port, where a Prometheus scrape config for Triton already looks. */
const DEFAULT_METRICS_PORT = 8002;
const PROVIDERS = ["cuda", "webgpu", "cpu"] as const;
export type ExecutionProviderName = (typeof PROVIDERS)[number];

/** The GPU container's settings, from its environment; a bad value stops the container at start. */
export const gpuServerConfigSchema = z
  .object({
    /** SageMaker sets SAGEMAKER_BIND_TO_PORT where the image declares accept-bind-to-port. */
    SAGEMAKER_BIND_TO_PORT: port.optional(),
    /** The ports SageMaker lets a container open beside its serving port (`low-high`), where it sets one. */
    SAGEMAKER_SAFE_PORT_RANGE: z
      .string()
      .regex(/^\d+-\d+$/, "expected <low>-<high>")
      .transform((range) => range.split("-").map(Number) as [number, number])
      .optional(),
    MAAS_PORT: port.default(8080),
    MAAS_HOST: z.string().default("0.0.0.0"),
    /**
     * The port of `GET /metrics` (Prometheus text, Triton's names) and `GET /v2/models[/<m>[/versions/<v>]]/stats`
     * (Triton's statistics extension), apart from SageMaker's serving port as Triton's metrics port is.
     * @default 8002; the low end of SAGEMAKER_SAFE_PORT_RANGE where SageMaker sets one; a free port when
     * the serving port is one (MAAS_PORT=0: tests and the local stack never claim a fixed port)
     */
    MAAS_METRICS_PORT: port.optional(),
    /**
     * "1": publish the request and batch metrics to CloudWatch (PutMetricData, namespace ServerlessMaaS),
     * aggregated in memory and sent once a minute; needs cloudwatch:PutMetricData. The CDK sets it on the
     * endpoint; off elsewhere (the local stack, tests), where the same figures are on the metrics port.
     */
    MAAS_CLOUDWATCH_METRICS: z.enum(["0", "1"]).default("0"),
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
  })
  .superRefine((config, context) => {
    const range = config.SAGEMAKER_SAFE_PORT_RANGE;
    const metrics = metricsPort(config);
    // As Triton's SageMaker entry point does: a port outside the range would not be reachable there.
    if (range !== undefined && metrics !== 0 && (metrics < range[0] || metrics > range[1])) {
      context.addIssue({
        code: "custom",
        path: ["MAAS_METRICS_PORT"],
        message: `${metrics} is outside SAGEMAKER_SAFE_PORT_RANGE ${range.join("-")}`,
      });
    }
    if (metrics !== 0 && metrics === listenPort(config)) {
      context.addIssue({
        code: "custom",
        path: ["MAAS_METRICS_PORT"],
        message: `${metrics} is the serving port too`,
      });
    }
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

/** The settings that decide the ports (written out: the schema's own check reads them). */
interface PortSettings {
  readonly SAGEMAKER_BIND_TO_PORT?: number | undefined;
  readonly SAGEMAKER_SAFE_PORT_RANGE?: readonly [number, number] | undefined;
  readonly MAAS_PORT: number;
  readonly MAAS_METRICS_PORT?: number | undefined;
}

export function listenPort(config: Pick<PortSettings, "SAGEMAKER_BIND_TO_PORT" | "MAAS_PORT">): number {
  return config.SAGEMAKER_BIND_TO_PORT ?? config.MAAS_PORT;
}

/** Where the metrics port listens: see MAAS_METRICS_PORT. */
export function metricsPort(config: PortSettings): number {
  if (config.MAAS_METRICS_PORT !== undefined) return config.MAAS_METRICS_PORT;
  if (config.SAGEMAKER_SAFE_PORT_RANGE !== undefined) return config.SAGEMAKER_SAFE_PORT_RANGE[0];
  return listenPort(config) === 0 ? 0 : DEFAULT_METRICS_PORT;
}
