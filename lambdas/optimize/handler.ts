import { Logger } from "@aws-lambda-powertools/logger";
import { JSONStringified } from "@aws-lambda-powertools/parser/helpers";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { S3Client } from "@aws-sdk/client-s3";
import type { SQSRecord } from "aws-lambda";
import * as z from "zod";
import { type SqsBatchHandler, sqsBatchHandler } from "#aws/lambda/sqs-batch.ts";
import { withSourceMappedStack } from "#aws/lambda/stack-map.ts";
import { EmfPipelineMetricsSink } from "#aws/metrics/pipeline-emf-sink.ts";
import { OrtCandidateRuntime } from "#aws/onnx/candidate-runtime.ts";
import { DynamoModelRegistry } from "#aws/registry/dynamo-registry.ts";
import { S3DecisionStore } from "#aws/s3/decision-store.ts";
import { S3VariantStore } from "#aws/s3/variant-store.ts";
import {
  DISCARD_PIPELINE_METRICS,
  elapsedUs,
  optimizationMetricOutcome,
  type PipelineMetricsSink,
  recordPipelineMetric,
} from "#core/metrics/pipeline-metric.ts";
import type { OptimizationMetricOutcome } from "#core/metrics/pipeline-names.ts";
import { MODEL_NAME_PATTERN } from "#core/model.ts";
import {
  abandonOptimization,
  DEFAULT_OPTIMIZER_SETTINGS,
  type OptimizationOutcome,
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
    maxParityFeedBytes: config.MAAS_PARITY_MAX_FEED_BYTES ?? defaults.maxParityFeedBytes,
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

export interface OptimizeHandlerOptions {
  /** The optimize queue's maxReceiveCount: its last receive records a failure instead of throwing. @default 3 */
  readonly maxReceives?: number;
  /** Records from this queue are dead letters: their versions' optimization ends as failed. */
  readonly deadLetterQueueArn?: string;
  /** Where each message's outcome goes, after its optimization. @default - nowhere */
  readonly metrics?: PipelineMetricsSink;
}

/** The handler's options from the function's configuration. */
export function optimizeHandlerOptions(config: OptimizeConfig): OptimizeHandlerOptions {
  return {
    maxReceives: config.MAAS_OPTIMIZE_MAX_RECEIVES,
    ...(config.MAAS_OPTIMIZE_DEAD_LETTER_QUEUE_ARN === undefined
      ? {}
      : { deadLetterQueueArn: config.MAAS_OPTIMIZE_DEAD_LETTER_QUEUE_ARN }),
  };
}

/** How many times SQS has handed out this message, this receive included. */
function receivesOf(record: SQSRecord): number {
  const count = Number(record.attributes?.ApproximateReceiveCount);
  return Number.isInteger(count) && count > 0 ? count : 1;
}

/**
 * The optimize function: one `{name, version}` per SQS message, handled one after another (each
 * benchmark wants the CPU to itself). A message whose optimization throws (an infrastructure error, or
 * a malformed message) is a batch item failure: retried by SQS, dead-lettered after `maxReceives`. On
 * the last receive a failure is recorded on the version instead, which ends `ready` on its original.
 * Records from the optimize dead-letter queue (what crashed or timed out every time) end the same way.
 * Each message's outcome (or the throw) goes to `options.metrics` once its optimization has ended.
 */
export function createOptimizeHandler(
  deps: OptimizerDeps,
  logger: Logger,
  options: OptimizeHandlerOptions = {},
): OptimizeHandler {
  const maxReceives = options.maxReceives ?? 3;
  const metrics = options.metrics ?? DISCARD_PIPELINE_METRICS;
  const onMetricError = (error: unknown) =>
    logger.warn("could not record a metric", { error: String(error) });

  async function optimizeRecord(record: SQSRecord): Promise<void> {
    const deadLetter =
      options.deadLetterQueueArn !== undefined && record.eventSourceARN === options.deadLetterQueueArn;
    const started = performance.now();
    let target: { name: string; version: number } | undefined;
    let outcome: OptimizationMetricOutcome = "error";
    try {
      target = optimizeMessage(record);
      const receives = receivesOf(record);
      const result = deadLetter
        ? await abandonOptimization(target, record.messageId, maxReceives, deps)
        : await optimizeVersion(target, record.messageId, deps, {
            lastAttempt: receives >= maxReceives,
            attempts: receives,
          });
      outcome = optimizationMetricOutcome(result);
      // A live attempt of another message holds the version: ask again after the visibility timeout,
      // when it has finished (a duplicate then) or its lease has run out.
      if (deadLetter && result.outcome === "in-progress") {
        throw new Error(
          `${target.name} v${target.version} is being optimized by another attempt; this dead letter is retried`,
        );
      }
      const log = {
        ...target,
        deadLetter,
        receives,
        ...describeOutcome(result),
        ms: Math.round(performance.now() - started),
      };
      if (result.outcome === "failed" && result.unfinished)
        logger.error("optimization did not finish; the original serves", log);
      else if (result.outcome === "failed") logger.warn("optimization failed; the original serves", log);
      else logger.info("optimize message handled", log);
    } catch (error) {
      logger.error(
        deadLetter
          ? "a dead-lettered optimize message could not be recorded; it will be retried"
          : "optimization failed; the message will be retried",
        { messageId: record.messageId, error: withSourceMappedStack(error as Error) },
      );
      throw error;
    } finally {
      recordPipelineMetric(
        metrics,
        {
          kind: "optimization",
          model: target?.name,
          version: target?.version,
          outcome,
          durationUs: elapsedUs(started),
        },
        onMetricError,
      );
    }
  }
  return sqsBatchHandler(optimizeRecord, logger);
}

function describeOutcome(result: OptimizationOutcome) {
  return {
    outcome: result.outcome,
    ...(result.outcome === "optimized"
      ? {
          selected: result.selected,
          reused: result.reused,
          variants: result.variants.map(({ artifact: _, ...figures }) => figures),
        }
      : {}),
    ...(result.outcome === "failed" || result.outcome === "ignored" ? { reason: result.reason } : {}),
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
    decisions: new S3DecisionStore(clients.s3),
    runtime: new OrtCandidateRuntime(config.MAAS_INTRA_OP_THREADS),
    now: () => new Date().toISOString(),
    settings: optimizerSettings(config),
  };
}

const defaultLogger = new Logger({ serviceName: "maas-optimize" });
let defaultHandler: OptimizeHandler | undefined;

export const handler: OptimizeHandler = (event, context) => {
  if (defaultHandler === undefined) {
    const config = loadOptimizeConfig(process.env);
    defaultHandler = createOptimizeHandler(
      createOptimizerDeps(config, {
        s3: new S3Client({ responseChecksumValidation: "WHEN_REQUIRED" }),
        dynamo: new DynamoDBClient({}),
      }),
      defaultLogger,
      { ...optimizeHandlerOptions(config), metrics: new EmfPipelineMetricsSink() },
    );
  }
  return defaultHandler(event, context);
};
