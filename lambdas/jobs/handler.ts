import { Logger } from "@aws-lambda-powertools/logger";
import { JSONStringified } from "@aws-lambda-powertools/parser/helpers";
import type { Context, SQSRecord } from "aws-lambda";
import * as z from "zod";
import { DynamoJobStore, S3JobObjects, SqsJobQueue } from "#aws/jobs/aws-jobs.ts";
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
  /** The jobs queue, to bring a failed job's message back sooner than its visibility timeout. */
  readonly queue: SqsJobQueue | undefined;
}

/**
 * How long a failed job waits before its next try: 30 s, then 60, 120... up to 15 minutes. The queue's
 * own visibility timeout (six times the worker's 15 minutes) would make it wait 90.
 */
export function retryDelaySeconds(receives: number): number {
  return Math.min(900, 30 * 2 ** Math.max(0, receives - 1));
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
  const queue =
    config.MAAS_JOBS_QUEUE_URL === undefined
      ? undefined
      : new SqsJobQueue(config.MAAS_JOBS_QUEUE_URL, jobClientConfig(clients, "sqs"));
  return { runner, parts, queue };
}

/**
 * The jobs queue's consumer: runs each job (JobRunner decides what a failure means; a throw is a batch
 * item failure for SQS to deliver again). A record from `deadLetterQueueArn` ends its job `failed`.
 */
export function createJobsHandler(
  runner: JobRunner,
  logger: Logger,
  options: {
    readonly deadLetterQueueArn?: string;
    /** Brings a failed job's message back after `seconds` (the jobs queue's ChangeMessageVisibility). */
    readonly retryAfter?: (receiptHandle: string, seconds: number) => Promise<void>;
  } = {},
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
      const delay = retryDelaySeconds(receives);
      logger.error("job failed; the message will be retried", {
        id,
        receives,
        retryInSeconds: delay,
        error: withSourceMappedStack(error as Error),
      });
      await options
        .retryAfter?.(record.receiptHandle, delay)
        .catch((changeError: unknown) =>
          logger.warn("could not shorten the retry's wait", { id, error: String(changeError) }),
        );
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
    const { runner, queue } = createJobsWorker(config, defaultClients(), defaultLogger);
    defaultHandler = createJobsHandler(runner, defaultLogger, {
      ...(queue === undefined ? {} : { retryAfter: (handle, seconds) => queue.retryAfter(handle, seconds) }),
      ...(config.MAAS_JOBS_DEAD_LETTER_QUEUE_ARN === undefined
        ? {}
        : { deadLetterQueueArn: config.MAAS_JOBS_DEAD_LETTER_QUEUE_ARN }),
    });
  }
  return defaultHandler(event, context);
};
