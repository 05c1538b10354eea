import { Logger } from "@aws-lambda-powertools/logger";
import { JSONStringified } from "@aws-lambda-powertools/parser/helpers";
import type { Context, SQSRecord } from "aws-lambda";
import * as z from "zod";
import { DynamoJobStore, S3JobObjects } from "#aws/jobs/aws-jobs.ts";
import { type SqsBatchHandler, sqsBatchHandler } from "#aws/lambda/sqs-batch.ts";
import { withSourceMappedStack } from "#aws/lambda/stack-map.ts";
import { JobRunner } from "#core/jobs/async-inference.ts";
import {
  createInferenceParts,
  defaultClients,
  type InferenceClients,
  type InferenceParts,
  jobClientConfig,
} from "#lambdas/inference/service.ts";
import { type JobsConfig, loadJobsConfig } from "./config.ts";

export { type JobsConfig, loadJobsConfig } from "./config.ts";

/** What the jobs queue carries: a job's id. */
const jobMessageSchema = JSONStringified(z.object({ id: z.string().min(1).max(64) }));

/** Time kept back from Lambda's timeout to record a job's end. */
const FINISH_MARGIN_MS = 5_000;

export interface JobsWorker {
  readonly runner: JobRunner;
  readonly parts: InferenceParts;
}

/** Wires the worker: the inference function's serving parts, with the worker's deadline and result limit. */
export function createJobsWorker(config: JobsConfig, clients: InferenceClients, logger?: Logger): JobsWorker {
  const table = config.MAAS_JOBS_TABLE;
  const bucket = config.MAAS_ASYNC_BUCKET;
  if (table === undefined || bucket === undefined)
    throw new Error("the jobs worker needs MAAS_JOBS_TABLE and MAAS_ASYNC_BUCKET");
  const parts = createInferenceParts(
    { ...config, MAAS_MAX_RESPONSE_BYTES: config.MAAS_ASYNC_MAX_RESULT_BYTES },
    clients,
    logger,
  );
  const runner = new JobRunner({
    store: new DynamoJobStore(table, jobClientConfig(clients, "dynamodb")),
    objects: new S3JobObjects(bucket, jobClientConfig(clients, "s3")),
    service: parts.service,
    maxReceives: config.MAAS_JOBS_MAX_RECEIVES,
  });
  return { runner, parts };
}

/**
 * The jobs queue's consumer: runs each job (JobRunner decides what a failure means; a throw is a batch
 * item failure for SQS to deliver again). A record from `deadLetterQueueArn` ends its job `failed`.
 */
export function createJobsHandler(
  runner: JobRunner,
  logger: Logger,
  options: { readonly deadLetterQueueArn?: string } = {},
): SqsBatchHandler {
  let context: Context | undefined;
  async function handleRecord(record: SQSRecord): Promise<void> {
    const parsed = jobMessageSchema.safeParse(record.body);
    if (!parsed.success) {
      logger.error("not a job message; dropped", { messageId: record.messageId });
      return;
    }
    const { id } = parsed.data;
    const receives = Number(record.attributes.ApproximateReceiveCount ?? "1");
    if (options.deadLetterQueueArn !== undefined && record.eventSourceARN === options.deadLetterQueueArn) {
      await runner.abandon(id, receives);
      logger.warn("job dead-lettered", { id, receives });
      return;
    }
    const latest = Date.now() + (context?.getRemainingTimeInMillis() ?? 900_000) - FINISH_MARGIN_MS;
    const started = performance.now();
    try {
      const outcome = await runner.run(id, receives, latest);
      logger.info("job handled", { id, outcome, receives, ms: Math.round(performance.now() - started) });
    } catch (error) {
      logger.error("job failed; the message will be retried", {
        id,
        receives,
        error: withSourceMappedStack(error as Error),
      });
      throw error;
    }
  }
  const batch = sqsBatchHandler(handleRecord, logger);
  return (event, lambdaContext) => {
    context = lambdaContext;
    return batch(event, lambdaContext);
  };
}

const defaultLogger = new Logger({ serviceName: "maas-jobs" });
let defaultHandler: SqsBatchHandler | undefined;

/** The Lambda entry point, for the jobs queue and its dead-letter queue. */
export const handler: SqsBatchHandler = (event, context) => {
  if (defaultHandler === undefined) {
    const config = loadJobsConfig(process.env);
    const { runner } = createJobsWorker(config, defaultClients(), defaultLogger);
    defaultHandler = createJobsHandler(runner, defaultLogger, {
      ...(config.MAAS_JOBS_DEAD_LETTER_QUEUE_ARN === undefined
        ? {}
        : { deadLetterQueueArn: config.MAAS_JOBS_DEAD_LETTER_QUEUE_ARN }),
    });
  }
  return defaultHandler(event, context);
};
