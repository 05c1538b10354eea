import * as z from "zod/mini";
import { parseConfig } from "#core/config.ts";
import { defineEnv } from "#core/env-contract.ts";
import { type InferenceConfig, loadInferenceConfig } from "#lambdas/inference/config.ts";

const positiveInt = z.coerce.number().check(z.int(), z.positive());

/**
 * The jobs worker's own settings. It also reads the inference function's (INFERENCE_ENV): it serves
 * the same models the same way, with its own deadline (MAAS_INFERENCE_DEADLINE_MS) and result limit.
 */
export const JOBS_ENV = defineEnv({
  /** Receives of a job's message, as the queue's redrive policy counts them; the last one's failure is final. */
  maxReceives: ["MAAS_JOBS_MAX_RECEIVES", z._default(positiveInt, 3)],
  /** The largest V2 response a job may write (to S3, not through Lambda's 6 MB). */
  maxResultBytes: ["MAAS_ASYNC_MAX_RESULT_BYTES", z._default(positiveInt, 1024 ** 3)],
  /** The jobs dead-letter queue, which the worker also consumes: a job there ends `failed`. */
  deadLetterQueueArn: ["MAAS_JOBS_DEAD_LETTER_QUEUE_ARN", z.optional(z.string().check(z.minLength(1)))],
});

export const jobsEnvironment = JOBS_ENV.environment;

const jobsConfigSchema = z.object(JOBS_ENV.shape);

export type JobsConfig = InferenceConfig & z.infer<typeof jobsConfigSchema>;

export function loadJobsConfig(env: Record<string, string | undefined>): JobsConfig {
  return { ...loadInferenceConfig(env), ...parseConfig(jobsConfigSchema, env, "jobs") };
}
