import { readFile } from "node:fs/promises";
import { extname, join, resolve } from "node:path";
import { Logger } from "@aws-lambda-powertools/logger";
import type { LogLevel } from "@aws-lambda-powertools/logger/types";
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { SQSClient } from "@aws-sdk/client-sqs";
import { Upload } from "@aws-sdk/lib-storage";
import { DynamoModelRegistry } from "#aws/registry/dynamo-registry.ts";
import { AdminService, type VersionUploads } from "#core/admin/admin-service.ts";
import { MinuteFigures } from "#core/metrics/figures.ts";
import { PipelineStatistics } from "#core/metrics/pipeline-statistics.ts";
import type { RequestTracing, Span } from "#core/metrics/span.ts";
import { InferenceStatistics } from "#core/metrics/statistics.ts";
import type { ModelVersion } from "#core/model.ts";
import { manifestKey, modelKey } from "#core/registry/manifest.ts";
import { isServable } from "#core/registry/registry.ts";
import {
  createAdminDeps,
  createAdminHandler,
  loadAdminConfig,
  s3VersionUploads,
} from "#lambdas/admin/handler.ts";
import { loadInferenceConfig } from "#lambdas/inference/config.ts";
import { createInferenceHandler } from "#lambdas/inference/handler.ts";
import { createInferenceParts, defaultClients, type InferenceParts } from "#lambdas/inference/service.ts";
import { JOBS_ENV } from "#lambdas/jobs/config.ts";
import { createJobsHandler, createJobsWorker, loadJobsConfig } from "#lambdas/jobs/handler.ts";
import { OPTIMIZE_ENV } from "#lambdas/optimize/config.ts";
import {
  createOptimizeHandler,
  createOptimizerDeps,
  loadOptimizeConfig,
  optimizeHandlerOptions,
} from "#lambdas/optimize/handler.ts";
import {
  createRegisterHandler,
  createRegistrationDeps,
  loadRegisterConfig,
} from "#lambdas/register/handler.ts";
import { buildConsole } from "../console/build.ts";
import { buildIrisModel } from "../models/iris.ts";
import { type Emulators, type LocalCredentials, startEmulators } from "./emulators.ts";
import { JOB_DEADLINE_MS, localFunctionEnvironments } from "./function-environments.ts";
import { type Gateway, type StaticFile, type StaticSite, startGateway } from "./gateway.ts";
import { type QueuePollerOptions, startQueuePoller } from "./queue-poller.ts";
import { type LocalSageMaker, startLocalSageMaker } from "./sagemaker-runtime.ts";
import { startUploadBridge, type UploadBridge } from "./upload-bridge.ts";

export const LOCAL_BUCKET = "maas-models";
export const LOCAL_TABLE = "maas-registry";
export const REGISTER_QUEUE = "maas-register";
export const OPTIMIZE_QUEUE = "maas-optimize";
export const OPTIMIZE_DEAD_LETTER_QUEUE = `${OPTIMIZE_QUEUE}-dlq`;
export const LOCAL_JOBS_TABLE = "maas-jobs";
export const JOBS_QUEUE = "maas-jobs";
export const JOBS_DEAD_LETTER_QUEUE = `${JOBS_QUEUE}-dlq`;
/** Receives of a publish message before its dead-letter queue, as the CDK stack's queues have it. */
const MAX_RECEIVES = 3;
export const DEMO_MODEL = "iris";

export interface LocalStackOptions {
  readonly dataDir: string;
  readonly port: number;
  readonly s3Port: number;
  readonly dynamoPort?: number;
  /** Address the API and the signed S3 endpoint listen on; the rest stays on loopback. @default "127.0.0.1" */
  readonly host?: string;
  readonly apiKey: string;
  readonly adminKey: string;
  /** The credentials the S3 endpoint takes signatures from. @default local / local */
  readonly s3Credentials?: LocalCredentials;
  /** Function logs; "SILENT" for tests. @default "INFO" */
  readonly logLevel?: LogLevel;
  /** Publish and warm the demo model. @default true */
  readonly demo?: boolean;
  /** How long a failed register message stays invisible before its retry. @default 10 */
  readonly registerVisibilitySeconds?: number;
  /** Models above this size are registered for SageMaker; wins over `env`. @default 512 MiB */
  readonly lambdaMaxModelBytes?: number;
  /**
   * Where the functions' `MAAS_*` settings come from, over the local defaults (`localFunctionEnvironments`);
   * the resources this stack creates are its own. @default process.env
   */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /**
   * Run asynchronous jobs. Off, jobs are accepted and wait on their queue, as they would for a worker
   * that is down; a later stack on the same data directory runs them. @default true
   */
  readonly runJobs?: boolean;
  /**
   * Traces infer requests as the function does in Lambda (X-Ray there), with the inference function's
   * S3 and DynamoDB calls. @default none
   */
  readonly tracing?: RequestTracing;
  /** Serve the web console at `/console/`, built into `<dataDir>/console` on its first request. @default true */
  readonly console?: boolean;
}

export interface PublishOptions {
  /** Contents of `maas.json`, uploaded before the model so registration reads it. */
  readonly manifest?: unknown;
  /** Give up waiting for a final status after this long. @default 60_000 */
  readonly timeoutMs?: number;
}

export interface LocalStack {
  readonly url: string;
  /** The web console (`<url>/console/`); it asks for the keys. */
  readonly consoleUrl: string;
  /** Each model's requests, errors and latency per minute: the admin API's figures answer from it. */
  readonly figures: MinuteFigures;
  /** What the inference function counted: `GET /metrics` and `.../stats` answer from it. */
  readonly statistics: InferenceStatistics;
  /** What the register, optimize and jobs functions counted: `GET /metrics` answers from it too. */
  readonly pipelineStatistics: PipelineStatistics;
  readonly emulators: Emulators;
  readonly gateway: Gateway;
  readonly inference: InferenceParts;
  /** The SageMaker runtime stand-in and the GPU container server (on CPU) behind it. */
  readonly sagemaker: LocalSageMaker;
  /** Read and write access to the registry, for tests and tools. */
  readonly registry: DynamoModelRegistry;
  readonly bucket: string;
  readonly sqs: SQSClient;
  /** Uploads a model as a publisher would, then waits until registration settles it. */
  publish(name: string, version: number, bytes: Uint8Array, options?: PublishOptions): Promise<ModelVersion>;
  /** Polls the registry until the version leaves `registering`. */
  waitForVersion(name: string, version: number, timeoutMs?: number): Promise<ModelVersion>;
  close(): Promise<void>;
}

/**
 * The whole service in this process: emulators, the upload bridge and queue poller standing in for
 * S3 notifications and event source mappings, the register, inference and admin functions, and a
 * local API Gateway. The demo model is published by upload, like any other, and warmed.
 */
export async function startLocalStack(options: LocalStackOptions): Promise<LocalStack> {
  const dataDir = resolve(options.dataDir);
  const emulators = await startEmulators({
    dataDir,
    s3Port: options.s3Port,
    dynamoPort: options.dynamoPort ?? 0,
    ...(options.host === undefined ? {} : { host: options.host }),
    ...(options.s3Credentials === undefined ? {} : { credentials: options.s3Credentials }),
    bucket: LOCAL_BUCKET,
    table: LOCAL_TABLE,
    jobsTable: LOCAL_JOBS_TABLE,
    queues: [
      {
        name: REGISTER_QUEUE,
        deadLetter: { name: `${REGISTER_QUEUE}-dlq`, maxReceiveCount: MAX_RECEIVES },
        visibilityTimeoutSeconds: options.registerVisibilitySeconds ?? 10,
      },
      {
        name: OPTIMIZE_QUEUE,
        deadLetter: { name: OPTIMIZE_DEAD_LETTER_QUEUE, maxReceiveCount: MAX_RECEIVES },
      },
      {
        name: JOBS_QUEUE,
        deadLetter: { name: JOBS_DEAD_LETTER_QUEUE, maxReceiveCount: MAX_RECEIVES },
        // As the CDK stack's: longer than a job may run.
        visibilityTimeoutSeconds: JOB_DEADLINE_MS / 1000 + 60,
      },
    ],
  });
  const stoppers: (() => Promise<void>)[] = [() => emulators.stop()];
  const stopAll = async () => {
    for (const stop of stoppers.reverse()) await stop().catch(() => undefined);
  };

  try {
    const { region, credentials } = emulators;
    const logLevel = options.logLevel ?? "INFO";
    const onError = (error: unknown) => {
      if (logLevel !== "SILENT") console.error("[local]", error);
    };
    const s3Config = { region, credentials, endpoint: emulators.s3Endpoint, forcePathStyle: true };
    const sagemaker = await startLocalSageMaker({ dataDir, s3: s3Config, bucket: LOCAL_BUCKET });
    stoppers.push(() => sagemaker.close());
    // The functions' own client set-up, pointed at the emulators: the inference function's signed
    // HTTP clients and the SDK clients of the others (and of the stack's own writes), as in AWS.
    const { tracing } = options;
    const onCall = tracing === undefined ? undefined : (span: Span) => tracing.recordCall(span);
    const clients = defaultClients({
      s3: { region, credentials, endpoint: emulators.s3Endpoint, onCall },
      dynamo: { region, credentials, endpoint: emulators.dynamoEndpoint, onCall },
      sagemaker: { region, credentials, endpoint: sagemaker.url },
      sqsEndpoint: emulators.s3Endpoint,
    });
    const s3 = new S3Client({ ...s3Config, responseChecksumValidation: "WHEN_REQUIRED" });
    // The emulators' shared client: stop() destroys it, after everything that uses it.
    const dynamo = emulators.dynamoClient();
    const sqs = new SQSClient({ region, credentials, endpoint: emulators.s3Endpoint });
    stoppers.push(async () => {
      s3.destroy();
      clients.sagemaker.destroy();
      sqs.destroy();
    });

    const environments = localFunctionEnvironments(
      {
        dataDir,
        table: LOCAL_TABLE,
        bucket: LOCAL_BUCKET,
        optimizeQueueUrl: emulators.queueUrl(OPTIMIZE_QUEUE),
        sagemakerEndpoint: sagemaker.endpointName,
        sagemakerModelPrefix: sagemaker.modelPrefix,
        jobsTable: LOCAL_JOBS_TABLE,
        jobsQueueUrl: emulators.queueUrl(JOBS_QUEUE),
      },
      options.env ?? process.env,
      { lambdaMaxModelBytes: options.lambdaMaxModelBytes },
    );
    const inferenceLogger = new Logger({ serviceName: "maas-inference", logLevel });
    const inference = createInferenceParts(
      loadInferenceConfig(environments.inference),
      clients,
      inferenceLogger,
    );
    stoppers.push(() => inference.sessions.close());
    // Before the emulators stop: captured exchanges still on their way to the bucket.
    stoppers.push(async () => inference.capture?.drain());
    const registry = new DynamoModelRegistry(dynamo, LOCAL_TABLE);
    // The worker functions' outcomes, counted for /metrics instead of written as EMF lines.
    const pipelineStatistics = new PipelineStatistics();

    const register = createRegisterHandler(
      createRegistrationDeps(loadRegisterConfig(environments.register), { s3, dynamo, sqs }),
      new Logger({ serviceName: "maas-register", logLevel }),
      { metrics: pipelineStatistics },
    );
    // Each queue's event source mapping: a poller that hands its batches to the function.
    const pollQueue = (queue: string, handler: QueuePollerOptions["handler"], batchSize?: number) => {
      const poller = startQueuePoller({
        sqs,
        queueUrl: emulators.queueUrl(queue),
        queueArn: emulators.queueArn(queue),
        handler,
        ...(batchSize === undefined ? {} : { batchSize }),
        onError,
      });
      stoppers.push(() => poller.stop());
    };
    pollQueue(REGISTER_QUEUE, (event) => register(event));
    const optimizeConfig = loadOptimizeConfig({
      ...environments.optimize,
      // Resources this stack created, as the CDK stack passes its queue's.
      [OPTIMIZE_ENV.names.maxReceives]: String(MAX_RECEIVES),
      [OPTIMIZE_ENV.names.deadLetterQueueArn]: emulators.queueArn(OPTIMIZE_DEAD_LETTER_QUEUE),
    });
    const optimize = createOptimizeHandler(
      createOptimizerDeps(optimizeConfig, { s3, dynamo }),
      new Logger({ serviceName: "maas-optimize", logLevel }),
      { ...optimizeHandlerOptions(optimizeConfig), metrics: pipelineStatistics },
    );
    // One benchmark at a time, as a batch size of 1 on the event source mapping.
    pollQueue(OPTIMIZE_QUEUE, (event) => optimize(event), 1);
    // What failed every receive (crashes, timeouts) ends `ready` on its original, with the reason.
    pollQueue(OPTIMIZE_DEAD_LETTER_QUEUE, (event) => optimize(event));
    // The jobs worker: its own serving parts (sessions, cache), as a separate function has in AWS.
    const jobsLogger = new Logger({ serviceName: "maas-jobs", logLevel });
    const jobsConfig = loadJobsConfig({
      ...environments.jobs,
      [JOBS_ENV.names.maxReceives]: String(MAX_RECEIVES),
      [JOBS_ENV.names.deadLetterQueueArn]: emulators.queueArn(JOBS_DEAD_LETTER_QUEUE),
    });
    const jobsWorker = createJobsWorker(jobsConfig, clients, jobsLogger);
    stoppers.push(() => jobsWorker.parts.sessions.close());
    if (options.runJobs ?? true) {
      const { queue } = jobsWorker;
      const jobs = createJobsHandler(jobsWorker.runner, jobsLogger, {
        deadLetterQueueArn: emulators.queueArn(JOBS_DEAD_LETTER_QUEUE),
        metrics: pipelineStatistics,
        jobs: jobsWorker.jobs,
        ...(queue === undefined
          ? {}
          : { retryAfter: (handle, seconds) => queue.retryAfter(handle, seconds) }),
      });
      pollQueue(JOBS_QUEUE, jobs, 1);
      pollQueue(JOBS_DEAD_LETTER_QUEUE, jobs);
    }
    const bridge: UploadBridge = startUploadBridge({
      fauxqs: emulators.fauxqs,
      s3,
      sqs,
      bucket: LOCAL_BUCKET,
      queueUrl: emulators.queueUrl(REGISTER_QUEUE),
      region,
      onError,
    });
    stoppers.push(() => bridge.stop());
    await bridge.reconcile(registry);

    // Per-minute figures for the console, beside the cumulative counters below.
    const figures = new MinuteFigures();
    const uploads = sameOriginUploads(s3VersionUploads(LOCAL_BUCKET, s3Config));
    const admin = createAdminHandler(
      new AdminService(
        createAdminDeps(loadAdminConfig(environments.admin), s3, dynamo, { figures, uploads }),
      ),
      new Logger({ serviceName: "maas-admin", logLevel }),
    );
    // One set of counters for the whole stack: /metrics and the statistics extension read them.
    const statistics = new InferenceStatistics();
    const gateway = await startGateway({
      port: options.port,
      ...(options.host === undefined ? {} : { host: options.host }),
      handler: createInferenceHandler(inference.service, inferenceLogger, {
        ...(inference.jobs === undefined ? {} : { jobs: inference.jobs }),
        statistics,
        serverTiming: true,
        ...(inference.capture === undefined ? {} : { capture: inference.capture }),
        ...(tracing === undefined ? {} : { tracing }),
        metrics: figures,
      }),
      adminHandler: admin,
      ...((options.console ?? true) ? { console: consoleSite(join(dataDir, "console")) } : {}),
      // The presigned publish uploads the admin API hands out, PUT from the console's own origin.
      storage: { bucket: LOCAL_BUCKET, endpoint: emulators.s3Endpoint },
      metrics: () => statistics.prometheus() + pipelineStatistics.prometheus(),
      apiKey: options.apiKey,
      adminKey: options.adminKey,
    });
    stoppers.push(() => gateway.close());

    async function waitForVersion(name: string, version: number, timeoutMs = 60_000): Promise<ModelVersion> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const record = await registry.getVersionConsistent(name, version);
        if (record !== undefined && record.status !== "registering") return record;
        if (Date.now() > deadline) {
          throw new Error(
            `${name} version ${version} is still ${record?.status ?? "unregistered"} after ${timeoutMs} ms`,
          );
        }
        await new Promise((wake) => setTimeout(wake, 25));
      }
    }

    async function publish(
      name: string,
      version: number,
      bytes: Uint8Array,
      publishOptions: PublishOptions = {},
    ) {
      if (publishOptions.manifest !== undefined) {
        await s3.send(
          new PutObjectCommand({
            Bucket: LOCAL_BUCKET,
            Key: manifestKey(name, version),
            Body: JSON.stringify(publishOptions.manifest),
            ContentType: "application/json",
          }),
        );
      }
      // Multipart above 8 MiB, as S3 clients do; the emulator also refuses single PUTs over 11 MiB.
      await new Upload({
        client: s3,
        params: { Bucket: LOCAL_BUCKET, Key: modelKey(name, version), Body: bytes },
        partSize: 8 * 1024 * 1024,
      }).done();
      return waitForVersion(name, version, publishOptions.timeoutMs);
    }

    if (options.demo ?? true) {
      const existing = await registry.getVersion(DEMO_MODEL, 1);
      const demo = existing?.status === "ready" ? existing : await publish(DEMO_MODEL, 1, buildIrisModel());
      if (isServable(demo)) await inference.runner.load?.(demo);
    }

    return {
      url: gateway.url,
      consoleUrl: `${gateway.url}/console/`,
      figures,
      statistics,
      pipelineStatistics,
      emulators,
      gateway,
      inference,
      sagemaker,
      registry,
      bucket: LOCAL_BUCKET,
      sqs,
      publish,
      waitForVersion,
      close: stopAll,
    };
  } catch (error) {
    await stopAll();
    throw error;
  }
}

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
};

/** The console as the gateway serves it: built on first use, with the local stack's config.json. */
function consoleSite(outDir: string): StaticSite {
  return {
    async files() {
      const { files } = await buildConsole(outDir);
      const site = new Map<string, StaticFile>();
      for (const file of files) {
        site.set(file, {
          body: await readFile(join(outDir, file)),
          contentType: CONTENT_TYPES[extname(file)] ?? "application/octet-stream",
          // Every file but index.html carries its content's hash in its name.
          immutable: file !== "index.html",
        });
      }
      site.set("config.json", {
        body: Buffer.from(JSON.stringify({ auth: "key" })),
        contentType: CONTENT_TYPES[".json"]!,
        immutable: false,
      });
      return site;
    },
  };
}

/**
 * Presigned upload URLs without the S3 endpoint's origin: the gateway forwards `/<bucket>/...` to it, so a
 * browser uploads to the origin it loaded the console from (the endpoint's port is another origin).
 */
function sameOriginUploads(uploads: VersionUploads): VersionUploads {
  const local = (url: string) => {
    const parsed = new URL(url);
    return `${parsed.pathname}${parsed.search}`;
  };
  return {
    presignPut: async (key, expiresSeconds) => local(await uploads.presignPut(key, expiresSeconds)),
    presignMultipart: async (key, parts, expiresSeconds) => {
      const { uploadId, partUrls, completeUrl } = await uploads.presignMultipart(key, parts, expiresSeconds);
      return { uploadId, partUrls: partUrls.map(local), completeUrl: local(completeUrl) };
    },
    exists: (key) => uploads.exists(key),
  };
}
