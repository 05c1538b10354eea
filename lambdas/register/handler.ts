import { readFile, unlink, writeFile } from "node:fs/promises";
import { Logger } from "@aws-lambda-powertools/logger";
import { JSONStringified } from "@aws-lambda-powertools/parser/helpers";
import { S3Schema } from "@aws-lambda-powertools/parser/schemas/s3";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { S3Client } from "@aws-sdk/client-s3";
import { SQSClient } from "@aws-sdk/client-sqs";
import type { SQSRecord } from "aws-lambda";
import * as z from "zod";
import { type SqsBatchHandler, sqsBatchHandler } from "#aws/lambda/sqs-batch.ts";
import { withSourceMappedStack } from "#aws/lambda/stack-map.ts";
import { EmfPipelineMetricsSink } from "#aws/metrics/pipeline-emf-sink.ts";
import { OrtCandidateRuntime } from "#aws/onnx/candidate-runtime.ts";
import { createOrtSession } from "#aws/onnx/runner.ts";
import { DynamoModelRegistry } from "#aws/registry/dynamo-registry.ts";
import { S3ArtifactWriter } from "#aws/s3/artifact-writer.ts";
import { S3UploadStore } from "#aws/s3/upload-store.ts";
import { S3EndpointModelStore } from "#aws/sagemaker/endpoint-models.ts";
import { SqsOptimizeQueue } from "#aws/sqs/optimize-queue.ts";
import {
  DISCARD_PIPELINE_METRICS,
  elapsedUs,
  type PipelineMetricsSink,
  recordPipelineMetric,
  registrationErrorOutcome,
} from "#core/metrics/pipeline-metric.ts";
import { parseUploadKey } from "#core/registry/manifest.ts";
import {
  type RegistrationDeps,
  RegistrationInProgressError,
  registerUpload,
  type UploadEvent,
} from "#core/registry/registration.ts";
import { loadRegisterConfig, type RegisterConfig } from "./config.ts";

export { loadRegisterConfig, type RegisterConfig, registerConfigSchema } from "./config.ts";

/**
 * The S3 event notification schema, but with any `sourceIPAddress`: the library's takes IPv4 only,
 * and an upload over S3's dual-stack endpoints carries an IPv6 one.
 */
const s3NotificationSchema = S3Schema.extend({
  Records: z
    .array(
      S3Schema.shape.Records.element.extend({
        requestParameters: z.object({ sourceIPAddress: z.string() }),
      }),
    )
    .min(1),
});

/** An S3 notification as the queue delivers it; S3 also sends a TestEvent on setup. */
const registerMessageSchema = JSONStringified(
  z.union([s3NotificationSchema, z.object({ Event: z.literal("s3:TestEvent") })]),
);

/** S3 URL-encodes keys in notifications, with '+' for spaces. */
const decodeKey = (key: string) => decodeURIComponent(key.replace(/\+/g, " "));

export function uploadEvents(record: SQSRecord): UploadEvent[] {
  const parsed = registerMessageSchema.safeParse(record.body);
  if (!parsed.success) throw new Error(`message ${record.messageId} is not an S3 event notification`);
  if (!("Records" in parsed.data)) return [];
  return parsed.data.Records.filter((entry) => entry.eventName.startsWith("ObjectCreated:")).map((entry) => ({
    bucket: entry.s3.bucket.name,
    key: decodeKey(entry.s3.object.key),
    etag: (entry.s3.object.eTag ?? "").replaceAll('"', ""),
    bytes: entry.s3.object.size ?? 0,
  }));
}

export type RegisterHandler = SqsBatchHandler;

export interface RegisterHandlerOptions {
  /** Where each upload's outcome goes, after its registration. @default - nowhere */
  readonly metrics?: PipelineMetricsSink;
}

/** The model and version an upload's key names; none for a key that is not a model upload (never a label). */
function uploadSubject(key: string): { model: string | undefined; version: number | undefined } {
  try {
    const { name, version } = parseUploadKey(key);
    return { model: name, version };
  } catch {
    return { model: undefined, version: undefined };
  }
}

/**
 * The register function: one S3 notification per SQS message, handled one after another, in order
 * (a version's manifest and model, or one upload notified twice, must not race). A message whose
 * registration throws (an infrastructure error, or a message that is not an S3 notification) is a
 * batch item failure, retried by SQS and dead-lettered after three receives; the rest of the batch goes on.
 * Each upload's outcome (or the throw) goes to `metrics` once its registration has ended.
 */
export function createRegisterHandler(
  deps: RegistrationDeps,
  logger: Logger,
  options: RegisterHandlerOptions = {},
): RegisterHandler {
  const metrics = options.metrics ?? DISCARD_PIPELINE_METRICS;
  const onMetricError = (error: unknown) =>
    logger.warn("could not record a metric", { error: String(error) });

  async function registerMessage(record: SQSRecord): Promise<void> {
    // The upload being registered when a throw ends the message (none if the message is not an S3 event).
    let current: { key: string; started: number } | undefined;
    try {
      for (const upload of uploadEvents(record)) {
        const started = performance.now();
        current = { key: upload.key, started };
        const result = await registerUpload(upload, deps);
        const durationUs = elapsedUs(started);
        const log = { key: upload.key, etag: upload.etag, ...result, ms: Math.round(durationUs / 1000) };
        if (result.outcome === "rejected" || result.outcome === "failed")
          logger.warn("upload not registered", log);
        else logger.info("upload handled", log);
        recordPipelineMetric(
          metrics,
          { kind: "registration", ...uploadSubject(upload.key), outcome: result.outcome, durationUs },
          onMetricError,
        );
        current = undefined;
      }
    } catch (error) {
      recordPipelineMetric(
        metrics,
        {
          kind: "registration",
          ...uploadSubject(current?.key ?? ""),
          outcome: registrationErrorOutcome(error),
          durationUs: current === undefined ? 0 : elapsedUs(current.started),
        },
        onMetricError,
      );
      // Another worker is still on this version: an expected retry, not an error.
      if (error instanceof RegistrationInProgressError) {
        logger.info(error.message, { messageId: record.messageId });
      } else {
        logger.error("registration failed; the message will be retried", {
          messageId: record.messageId,
          error: withSourceMappedStack(error as Error),
        });
      }
      throw error;
    }
  }
  return sqsBatchHandler(registerMessage, logger);
}

export interface RegisterClients {
  readonly s3: S3Client;
  readonly dynamo: DynamoDBClient;
  readonly sqs: SQSClient;
}

/** Wires registration from configuration and clients: the same code in Lambda and locally. */
export function createRegistrationDeps(config: RegisterConfig, clients: RegisterClients): RegistrationDeps {
  return {
    store: new S3UploadStore(clients.s3, config.MAAS_WORK_DIR),
    registry: new DynamoModelRegistry(clients.dynamo, config.MAAS_REGISTRY_TABLE),
    optimizeQueue: new SqsOptimizeQueue(clients.sqs, config.MAAS_OPTIMIZE_QUEUE_URL),
    artifacts: new S3ArtifactWriter(clients.s3),
    ...(config.MAAS_SAGEMAKER_MODEL_PREFIX === undefined
      ? {}
      : { endpointModels: new S3EndpointModelStore(clients.s3, config.MAAS_SAGEMAKER_MODEL_PREFIX) }),
    tryLoad: async (path) => {
      const session = await createOrtSession(path);
      await session.release();
    },
    runSample: async (path, inputs, outputs) => {
      const session = await new OrtCandidateRuntime().open(path);
      try {
        return await session.run(inputs, outputs);
      } finally {
        await session.release();
      }
    },
    readModel: (path) => readFile(path),
    writeModel: (path, bytes) => writeFile(path, bytes),
    removeFile: (path) => unlink(path).catch(() => undefined),
    now: () => new Date().toISOString(),
    limits: {
      maxModelBytes: config.MAAS_MAX_MODEL_BYTES,
      lambdaMaxModelBytes: config.MAAS_LAMBDA_MAX_MODEL_BYTES,
    },
  };
}

const defaultLogger = new Logger({ serviceName: "maas-register" });
let defaultHandler: RegisterHandler | undefined;

export const handler: RegisterHandler = (event, context) => {
  defaultHandler ??= createRegisterHandler(
    createRegistrationDeps(loadRegisterConfig(process.env), {
      s3: new S3Client({ responseChecksumValidation: "WHEN_REQUIRED" }),
      dynamo: new DynamoDBClient({}),
      sqs: new SQSClient({}),
    }),
    defaultLogger,
    { metrics: new EmfPipelineMetricsSink() },
  );
  return defaultHandler(event, context);
};
