import * as z from "zod";
import { parseConfig } from "#core/config.ts";
import { defineEnv } from "#core/env-contract.ts";

const positiveInt = z.coerce.number().int().positive();
const fraction = z.coerce.number().min(0).max(1);
const flag = z.enum(["true", "false"]).transform((value) => value === "true");

/**
 * The optimize function's environment: each setting, its variable and how the function reads it.
 * Settings left unset take the optimizer's defaults (`optimizerSettings`): this module stays free of
 * the optimizer's code, which the CDK app must not load.
 */
export const OPTIMIZE_ENV = defineEnv({
  registryTable: ["MAAS_REGISTRY_TABLE", z.string().min(1)],
  workDir: ["MAAS_WORK_DIR", z.string().default("/tmp/maas-optimize")],
  parityMinCosine: ["MAAS_PARITY_MIN_COSINE", fraction.optional()],
  parityMinTop1: ["MAAS_PARITY_MIN_TOP1", fraction.optional()],
  parityMaxRelativeDiff: ["MAAS_PARITY_MAX_RELATIVE_DIFF", z.coerce.number().positive().optional()],
  /** Unset: only the relative bound applies. */
  parityMaxAbsDiff: ["MAAS_PARITY_MAX_ABS_DIFF", z.coerce.number().positive().optional()],
  parityFeeds: ["MAAS_PARITY_FEEDS", positiveInt.optional()],
  parityBatch: ["MAAS_PARITY_BATCH", positiveInt.optional()],
  /** Bytes of one generated parity feed at most; a model declaring larger inputs keeps its original. */
  parityMaxFeedBytes: ["MAAS_PARITY_MAX_FEED_BYTES", positiveInt.optional()],
  benchmarkRuns: ["MAAS_BENCHMARK_RUNS", positiveInt.optional()],
  benchmarkWarmupRuns: ["MAAS_BENCHMARK_WARMUP_RUNS", z.coerce.number().int().nonnegative().optional()],
  benchmarkBatch: ["MAAS_BENCHMARK_BATCH", positiveInt.optional()],
  minSpeedup: ["MAAS_MIN_SPEEDUP", fraction.optional()],
  minWinRate: ["MAAS_MIN_WIN_RATE", fraction.optional()],
  maxModelBytes: ["MAAS_OPTIMIZE_MAX_MODEL_BYTES", positiveInt.optional()],
  /** At least the function's timeout: a claim this old belongs to an attempt that is gone. */
  leaseSeconds: ["MAAS_OPTIMIZE_LEASE_SECONDS", positiveInt.optional()],
  /**
   * The optimize queue's maxReceiveCount: the receive that is the last records a failure on the version
   * (`optimizeError`, serving its original) instead of throwing it to SQS.
   */
  maxReceives: ["MAAS_OPTIMIZE_MAX_RECEIVES", positiveInt.default(3)],
  /** Records from this queue (the optimize dead-letter queue) end their version's optimization as failed. */
  deadLetterQueueArn: ["MAAS_OPTIMIZE_DEAD_LETTER_QUEUE_ARN", z.string().min(1).optional()],
  quantizeMinElements: ["MAAS_QUANTIZE_MIN_ELEMENTS", positiveInt.default(16_384)],
  /** 7-bit weights: needed on x64 without VNNI (VPMADDUBSW saturates); arm64 takes the full 8 bits. */
  quantizeReduceRange: ["MAAS_QUANTIZE_REDUCE_RANGE", flag.default(process.arch !== "arm64")],
  /** As the inference function has them: benchmarks must run with serving's threads. Default: this machine's vCPUs. */
  intraOpThreads: ["MAAS_INTRA_OP_THREADS", positiveInt.optional()],
});

/** The environment a stack gives the optimize function. */
export const optimizeEnvironment = OPTIMIZE_ENV.environment;

export const optimizeConfigSchema = z.object(OPTIMIZE_ENV.shape);
export type OptimizeConfig = z.infer<typeof optimizeConfigSchema>;

export function loadOptimizeConfig(env: Record<string, string | undefined>): OptimizeConfig {
  return parseConfig(optimizeConfigSchema, env, "optimize");
}
