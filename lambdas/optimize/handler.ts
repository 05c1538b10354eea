import { Logger } from "@aws-lambda-powertools/logger";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { S3Client } from "@aws-sdk/client-s3";
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from "aws-lambda";
import * as z from "zod";
import { withSourceMappedStack } from "#aws/lambda/stack-map.ts";
import { OrtCandidateRuntime } from "#aws/onnx/candidate-runtime.ts";
import { DynamoModelRegistry } from "#aws/registry/dynamo-registry.ts";
import { S3VariantStore } from "#aws/s3/variant-store.ts";
import { parseConfig } from "#core/config.ts";
import { MODEL_NAME_PATTERN } from "#core/model.ts";
import {
  DEFAULT_OPTIMIZER_SETTINGS,
  type OptimizerDeps,
  type OptimizerSettings,
  optimizeVersion,
} from "#core/optimize/optimization.ts";
import { DEFAULT_PARITY_THRESHOLDS } from "#core/optimize/parity.ts";

const positiveInt = z.coerce.number().int().positive();
const fraction = z.coerce.number().min(0).max(1);
const flag = z.enum(["true", "false"]).transform((value) => value === "true");
const defaults = DEFAULT_OPTIMIZER_SETTINGS;

export const optimizeConfigSchema = z.object({
  MAAS_REGISTRY_TABLE: z.string().min(1),
  MAAS_WORK_DIR: z.string().default("/tmp/maas-optimize"),
  MAAS_PARITY_MIN_COSINE: fraction.default(DEFAULT_PARITY_THRESHOLDS.minCosine),
  MAAS_PARITY_MIN_TOP1: fraction.default(DEFAULT_PARITY_THRESHOLDS.minTop1Agreement),
  MAAS_PARITY_MAX_RELATIVE_DIFF: z.coerce
    .number()
    .positive()
    .default(DEFAULT_PARITY_THRESHOLDS.maxRelativeDiff),
  /** Unset: only the relative bound applies. */
  MAAS_PARITY_MAX_ABS_DIFF: z.coerce.number().positive().optional(),
  MAAS_PARITY_FEEDS: positiveInt.default(defaults.parityFeeds),
  MAAS_PARITY_BATCH: positiveInt.default(defaults.parityBatch),
  MAAS_BENCHMARK_RUNS: positiveInt.default(defaults.benchmarkRuns),
  MAAS_BENCHMARK_WARMUP_RUNS: z.coerce.number().int().nonnegative().default(defaults.warmupRuns),
  MAAS_BENCHMARK_BATCH: positiveInt.default(defaults.benchmarkBatch),
  MAAS_MIN_SPEEDUP: fraction.default(defaults.minSpeedup),
  MAAS_MIN_WIN_RATE: fraction.default(defaults.minWinRate),
  MAAS_OPTIMIZE_MAX_MODEL_BYTES: positiveInt.default(defaults.maxModelBytes),
  /** At least the function's timeout: a claim this old belongs to an attempt that is gone. */
  MAAS_OPTIMIZE_LEASE_SECONDS: positiveInt.default(defaults.leaseMs / 1000),
  MAAS_QUANTIZE_MIN_ELEMENTS: positiveInt.default(16_384),
  /** 7-bit weights: needed on x64 without VNNI (VPMADDUBSW saturates); arm64 takes the full 8 bits. */
  MAAS_QUANTIZE_REDUCE_RANGE: flag.default(process.arch !== "arm64"),
  /** As the inference function has them: benchmarks must run with serving's threads. Default: this machine's vCPUs. */
  MAAS_INTRA_OP_THREADS: positiveInt.optional(),
});
export type OptimizeConfig = z.infer<typeof optimizeConfigSchema>;

export function loadOptimizeConfig(env: Record<string, string | undefined>): OptimizeConfig {
  return parseConfig(optimizeConfigSchema, env, "optimize");
}

export function optimizerSettings(config: OptimizeConfig): OptimizerSettings {
  return {
    workDir: config.MAAS_WORK_DIR,
    thresholds: {
      minCosine: config.MAAS_PARITY_MIN_COSINE,
      minTop1Agreement: config.MAAS_PARITY_MIN_TOP1,
      maxRelativeDiff: config.MAAS_PARITY_MAX_RELATIVE_DIFF,
      ...(config.MAAS_PARITY_MAX_ABS_DIFF === undefined
        ? {}
        : { maxAbsDiff: config.MAAS_PARITY_MAX_ABS_DIFF }),
    },
    benchmarkRuns: config.MAAS_BENCHMARK_RUNS,
    warmupRuns: config.MAAS_BENCHMARK_WARMUP_RUNS,
    minSpeedup: config.MAAS_MIN_SPEEDUP,
    minWinRate: config.MAAS_MIN_WIN_RATE,
    parityFeeds: config.MAAS_PARITY_FEEDS,
    parityBatch: config.MAAS_PARITY_BATCH,
    benchmarkBatch: config.MAAS_BENCHMARK_BATCH,
    quantize: {
      minElements: config.MAAS_QUANTIZE_MIN_ELEMENTS,
      reduceRange: config.MAAS_QUANTIZE_REDUCE_RANGE,
    },
    maxModelBytes: config.MAAS_OPTIMIZE_MAX_MODEL_BYTES,
    leaseMs: config.MAAS_OPTIMIZE_LEASE_SECONDS * 1000,
  };
}

/** The message registration sends once a version is ready. */
const optimizeMessageSchema = z.object({
  name: z.string().regex(MODEL_NAME_PATTERN),
  version: z.number().int().positive(),
});

export function optimizeMessage(record: SQSRecord): z.infer<typeof optimizeMessageSchema> {
  let body: unknown;
  try {
    body = JSON.parse(record.body);
  } catch {
    body = undefined;
  }
  const parsed = optimizeMessageSchema.safeParse(body);
  if (!parsed.success)
    throw new Error(`message ${record.messageId} is not an optimize message {name, version}`);
  return parsed.data;
}

export type OptimizeHandler = (event: SQSEvent, context?: Context) => Promise<SQSBatchResponse>;

/**
 * The optimize function: one `{name, version}` per SQS message, handled one after another (each
 * benchmark wants the CPU to itself). A message whose optimization throws (an infrastructure error, or
 * a malformed message) is a batch item failure: retried by SQS, dead-lettered after three receives.
 */
export function createOptimizeHandler(deps: OptimizerDeps, logger: Logger): OptimizeHandler {
  return async (event, context) => {
    if (context) logger.addContext(context);
    const batchItemFailures: SQSBatchResponse["batchItemFailures"] = [];
    for (const record of event.Records) {
      try {
        const target = optimizeMessage(record);
        const started = performance.now();
        const result = await optimizeVersion(target, record.messageId, deps);
        const log = {
          ...target,
          outcome: result.outcome,
          ...(result.outcome === "optimized"
            ? {
                selected: result.selected,
                variants: result.variants.map(({ artifact: _, ...figures }) => figures),
              }
            : {}),
          ...(result.outcome === "failed" || result.outcome === "ignored" ? { reason: result.reason } : {}),
          ms: Math.round(performance.now() - started),
        };
        if (result.outcome === "failed") logger.warn("optimization failed; the original serves", log);
        else logger.info("optimize message handled", log);
      } catch (error) {
        logger.error("optimization failed; the message will be retried", {
          messageId: record.messageId,
          error: withSourceMappedStack(error as Error),
        });
        batchItemFailures.push({ itemIdentifier: record.messageId });
      }
    }
    return { batchItemFailures };
  };
}

export interface OptimizeClients {
  readonly s3: S3Client;
  readonly dynamo: DynamoDBClient;
}

/** Wires the optimizer from configuration and clients: the same code in Lambda and locally. */
export function createOptimizerDeps(config: OptimizeConfig, clients: OptimizeClients): OptimizerDeps {
  return {
    registry: new DynamoModelRegistry(clients.dynamo, config.MAAS_REGISTRY_TABLE),
    store: new S3VariantStore(clients.s3),
    runtime: new OrtCandidateRuntime(config.MAAS_INTRA_OP_THREADS),
    now: () => new Date().toISOString(),
    settings: optimizerSettings(config),
  };
}

const defaultLogger = new Logger({ serviceName: "maas-optimize" });
let defaultHandler: OptimizeHandler | undefined;

export const handler: OptimizeHandler = (event, context) => {
  defaultHandler ??= createOptimizeHandler(
    createOptimizerDeps(loadOptimizeConfig(process.env), {
      s3: new S3Client({ responseChecksumValidation: "WHEN_REQUIRED" }),
      dynamo: new DynamoDBClient({}),
    }),
    defaultLogger,
  );
  return defaultHandler(event, context);
};
