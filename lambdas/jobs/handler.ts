import { Logger } from "@aws-lambda-powertools/logger";
import { JSONStringified } from "@aws-lambda-powertools/parser/helpers";
import type { Context, SQSRecord } from "aws-lambda";
import * as z from "zod";
import { DynamoJobStore, S3JobObjects, SqsJobQueue } from "#aws/jobs/aws-jobs.ts";
import { type SqsBatchHandler, sqsBatchHandler } from "#aws/lambda/sqs-batch.ts";
import { withSourceMappedStack } from "#aws/lambda/stack-map.ts";
import { EmfPipelineMetricsSink } from "#aws/metrics/pipeline-emf-sink.ts";
import { JobRunner } from "#core/jobs/async-inference.ts";
import {
  DISCARD_PIPELINE_METRICS,
  elapsedUs,
  type JobMetric,
  type JobReads,
  jobQueueUs,
  ObservedJobStore,
  type PipelineMetricsSink,
  recordPipelineMetric,
} from "#core/metrics/pipeline-metric.ts";
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
  /** The records the runner read, for each run's metric (model, version, queueing time). */
  readonly jobs: JobReads;
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
  const jobs = new ObservedJobStore(new DynamoJobStore(table, jobClientConfig(clients, "dynamodb")));
  const runner = new JobRunner({
    store: jobs,
    objects: new S3JobObjects(bucket, jobClientConfig(clients, "s3")),
    service: parts.service,
    maxReceives: config.MAAS_JOBS_MAX_RECEIVES,
  });
  const queue =
    config.MAAS_JOBS_QUEUE_URL === undefined
      ? undefined
      : new SqsJobQueue(config.MAAS_JOBS_QUEUE_URL, jobClientConfig(clients, "sqs"));
  return { runner, parts, queue, jobs };
}

export interface JobsHandlerOptions {
  readonly deadLetterQueueArn?: string;
  /** Brings a failed job's message back after `seconds` (the jobs queue's ChangeMessageVisibility). */
  readonly retryAfter?: (receiptHandle: string, seconds: number) => Promise<void>;
  /** Where each job message's outcome goes, after its run. @default - nowhere */
  readonly metrics?: PipelineMetricsSink;
  /** The jobs the runner read (`JobsWorker.jobs`): the metrics' model and version. @default - none: counted by outcome alone */
  readonly jobs?: JobReads;
}

/**
 * The jobs queue's consumer: runs each job (JobRunner decides what a failure means; a throw is a batch
 * item failure for SQS to deliver again). A record from `deadLetterQueueArn` ends its job `failed`.
 * Each job message's outcome goes to `options.metrics` once its run has ended.
 */
export function createJobsHandler(
  runner: JobRunner,
  logger: Logger,
  options: JobsHandlerOptions = {},
): SqsBatchHandler {
  let context: Context | undefined;
  const metrics = options.metrics ?? DISCARD_PIPELINE_METRICS;
  const count = (
    job: { model_name: string; model_version: number } | undefined,
    outcome: JobMetric["outcome"],
    durationUs: number,
    queueUs?: number,
  ) =>
    recordPipelineMetric(
      metrics,
      {
        kind: "job",
        model: job?.model_name,
        version: job?.model_version,
        outcome,
        durationUs,
        queueUs,
      },
      (error) => logger.warn("could not record a metric", { error: String(error) }),
    );

  async function handleRecord(record: SQSRecord): Promise<void> {
    const parsed = jobMessageSchema.safeParse(record.body);
    if (!parsed.success) {
      logger.error("not a job message; dropped", { messageId: record.messageId });
      return;
    }
    const { id } = parsed.data;
    const receives = Number(record.attributes.ApproximateReceiveCount ?? "1");
    if (options.deadLetterQueueArn !== undefined && record.eventSourceARN === options.deadLetterQueueArn) {
      const started = performance.now();
      await runner.abandon(id, receives);
      logger.warn("job dead-lettered", { id, receives });
      // Its run read nothing: one read for the model and version, on this rare path only.
      const job = await options.jobs?.get(id).catch(() => undefined);
      options.jobs?.take(id);
      count(job, "dead-lettered", elapsedUs(started));
      return;
    }
    const runStarted = Date.now();
    const latest = runStarted + (context?.getRemainingTimeInMillis() ?? 900_000) - FINISH_MARGIN_MS;
    const started = performance.now();
    try {
      const outcome = await runner.run(id, receives, latest);
      const durationUs = elapsedUs(started);
      logger.info("job handled", { id, outcome, receives, ms: Math.round(durationUs / 1000) });
      const job = options.jobs?.take(id);
      const ran = outcome !== "skipped" && job !== undefined;
      count(job, outcome, durationUs, ran ? jobQueueUs(job, runStarted) : undefined);
    } catch (error) {
      const job = options.jobs?.take(id);
      count(job, "retried", elapsedUs(started), job === undefined ? undefined : jobQueueUs(job, runStarted));
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
    const { runner, queue, jobs } = createJobsWorker(config, defaultClients(), defaultLogger);
    defaultHandler = createJobsHandler(runner, defaultLogger, {
      metrics: new EmfPipelineMetricsSink(),
      jobs,
      ...(queue === undefined ? {} : { retryAfter: (handle, seconds) => queue.retryAfter(handle, seconds) }),
      ...(config.MAAS_JOBS_DEAD_LETTER_QUEUE_ARN === undefined
        ? {}
        : { deadLetterQueueArn: config.MAAS_JOBS_DEAD_LETTER_QUEUE_ARN }),
    });
  }
  return defaultHandler(event, context);
};
