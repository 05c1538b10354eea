import { Logger } from "@aws-lambda-powertools/logger";
import { JSONStringified } from "@aws-lambda-powertools/parser/helpers";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { S3Client } from "@aws-sdk/client-s3";
import type { SQSRecord } from "aws-lambda";
import * as z from "zod";
import { type SqsBatchHandler, sqsBatchHandler } from "#aws/lambda/sqs-batch.ts";
import { withSourceMappedStack } from "#aws/lambda/stack-map.ts";
import { OrtCandidateRuntime } from "#aws/onnx/candidate-runtime.ts";
import { DynamoModelRegistry } from "#aws/registry/dynamo-registry.ts";
import { S3VariantStore } from "#aws/s3/variant-store.ts";
import { MODEL_NAME_PATTERN } from "#core/model.ts";
import {
  DEFAULT_OPTIMIZER_SETTINGS,
  type OptimizerDeps,
  type OptimizerSettings,
  optimizeVersion,
} from "#core/optimize/optimization.ts";
import { DEFAULT_PARITY_THRESHOLDS } from "#core/optimize/parity.ts";
import { loadOptimizeConfig, type OptimizeConfig } from "./config.ts";

export { loadOptimizeConfig, type OptimizeConfig, optimizeConfigSchema } from "./config.ts";

const defaults = DEFAULT_OPTIMIZER_SETTINGS;

/** The optimizer's settings from the function's configuration; what it leaves unset, the optimizer's defaults. */
export function optimizerSettings(config: OptimizeConfig): OptimizerSettings {
  return {
    workDir: config.MAAS_WORK_DIR,
    thresholds: {
      minCosine: config.MAAS_PARITY_MIN_COSINE ?? DEFAULT_PARITY_THRESHOLDS.minCosine,
      minTop1Agreement: config.MAAS_PARITY_MIN_TOP1 ?? DEFAULT_PARITY_THRESHOLDS.minTop1Agreement,
      maxRelativeDiff: config.MAAS_PARITY_MAX_RELATIVE_DIFF ?? DEFAULT_PARITY_THRESHOLDS.maxRelativeDiff,
      ...(config.MAAS_PARITY_MAX_ABS_DIFF === undefined
        ? {}
        : { maxAbsDiff: config.MAAS_PARITY_MAX_ABS_DIFF }),
    },
    benchmarkRuns: config.MAAS_BENCHMARK_RUNS ?? defaults.benchmarkRuns,
    warmupRuns: config.MAAS_BENCHMARK_WARMUP_RUNS ?? defaults.warmupRuns,
    minSpeedup: config.MAAS_MIN_SPEEDUP ?? defaults.minSpeedup,
    minWinRate: config.MAAS_MIN_WIN_RATE ?? defaults.minWinRate,
    parityFeeds: config.MAAS_PARITY_FEEDS ?? defaults.parityFeeds,
    parityBatch: config.MAAS_PARITY_BATCH ?? defaults.parityBatch,
    benchmarkBatch: config.MAAS_BENCHMARK_BATCH ?? defaults.benchmarkBatch,
    quantize: {
      minElements: config.MAAS_QUANTIZE_MIN_ELEMENTS,
      reduceRange: config.MAAS_QUANTIZE_REDUCE_RANGE,
    },
    maxModelBytes: config.MAAS_OPTIMIZE_MAX_MODEL_BYTES ?? defaults.maxModelBytes,
    leaseMs: (config.MAAS_OPTIMIZE_LEASE_SECONDS ?? defaults.leaseMs / 1000) * 1000,
  };
}

/** The message registration sends once a version is ready, as the queue delivers it. */
const optimizeMessageSchema = JSONStringified(
  z.object({
    name: z.string().regex(MODEL_NAME_PATTERN),
    version: z.number().int().positive(),
  }),
);

export function optimizeMessage(record: SQSRecord): z.infer<typeof optimizeMessageSchema> {
  const parsed = optimizeMessageSchema.safeParse(record.body);
  if (!parsed.success)
    throw new Error(`message ${record.messageId} is not an optimize message {name, version}`);
  return parsed.data;
}

export type OptimizeHandler = SqsBatchHandler;

/**
 * The optimize function: one `{name, version}` per SQS message, handled one after another (each
 * benchmark wants the CPU to itself). A message whose optimization throws (an infrastructure error, or
 * a malformed message) is a batch item failure: retried by SQS, dead-lettered after three receives.
 */
export function createOptimizeHandler(deps: OptimizerDeps, logger: Logger): OptimizeHandler {
  async function optimizeRecord(record: SQSRecord): Promise<void> {
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
      throw error;
    }
  }
  return sqsBatchHandler(optimizeRecord, logger);
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
