import type { Logger } from "@aws-lambda-powertools/logger";
import type { SageMakerRuntimeClientConfig } from "@aws-sdk/client-sagemaker-runtime";
import type { AwsCredentialIdentity } from "@smithy/types";
import { AwsHttpClient, type AwsHttpOptions, credentialsFromEnv } from "#aws/http/aws-http.ts";
import { DynamoJobStore, S3JobObjects, SqsJobQueue } from "#aws/jobs/aws-jobs.ts";
import { ArtifactCache } from "#aws/onnx/artifact-cache.ts";
import { OnnxRunner, sessionOptions } from "#aws/onnx/runner.ts";
import { ServingArtifacts } from "#aws/onnx/serving-artifacts.ts";
import { SessionPool } from "#aws/onnx/session-pool.ts";
import { CachedTokenizers } from "#aws/onnx/tokenizer-cache.ts";
import { WorkerSession } from "#aws/onnx/worker-session.ts";
import { DynamoHttpTable } from "#aws/registry/dynamo-http-table.ts";
import { RegistryReader } from "#aws/registry/reader.ts";
import { S3CopyRestorer } from "#aws/s3/artifact-restorer.ts";
import { S3CaptureStore } from "#aws/s3/capture-store.ts";
import { S3HttpArtifactSource } from "#aws/s3/http-source.ts";
import { LazySageMakerClient, SageMakerRunner } from "#aws/sagemaker/runner.ts";
import { PayloadCapture } from "#core/capture/payload-capture.ts";
import { AsyncInference } from "#core/jobs/async-inference.ts";
import { CachedModelRegistry } from "#core/registry/cached-registry.ts";
import type { ModelRunner } from "#core/runner.ts";
import { InferenceService } from "#core/v2/inference-service.ts";
import type { InferenceConfig } from "./config.ts";

export const SERVER_NAME = "serverless-maas";
export const SERVER_VERSION = "0.1.0";

/**
 * The function only reads (S3 GetObject, DynamoDB GetItem and Query): signed HTTP clients do that
 * without the SDK clients' import cost on a cold start. SageMaker keeps the SDK, loaded on first use.
 */
export interface InferenceClients {
  readonly s3: AwsHttpClient;
  readonly dynamo: AwsHttpClient;
  readonly sagemaker: LazySageMakerClient;
  /** SDK settings for asynchronous inference's clients, which load on its first call. */
  readonly jobs: {
    readonly region?: string;
    readonly credentials?: AwsCredentialIdentity;
    readonly endpoints: JobEndpoints;
  };
}

/** Where asynchronous inference's clients go; unset: the services' own endpoints (or AWS_ENDPOINT_URL_*). */
export interface JobEndpoints {
  readonly s3?: string;
  readonly dynamodb?: string;
  readonly sqs?: string;
}

/**
 * Clients for the function's own region and credentials (AWS_ENDPOINT_URL_* redirects them); the
 * local stack passes its emulator endpoints and credentials as `overrides`.
 */
export function defaultClients(
  overrides: {
    s3?: AwsHttpOptions;
    dynamo?: AwsHttpOptions;
    sagemaker?: SageMakerRuntimeClientConfig;
    /** The local stack's SQS endpoint (fauxqs serves it with S3). */
    sqsEndpoint?: string;
  } = {},
  env: Record<string, string | undefined> = process.env,
): InferenceClients {
  // Lambda puts the role's credentials in the environment: reading them directly skips loading the
  // whole default provider chain on the first SageMaker call.
  const credentials = credentialsFromEnv(env);
  return {
    s3: new AwsHttpClient("s3", overrides.s3, env),
    dynamo: new AwsHttpClient("dynamodb", overrides.dynamo, env),
    // The runner retries with its own deadline and jitter; SDK retries on top would multiply them.
    sagemaker: new LazySageMakerClient({ credentials, maxAttempts: 1, ...overrides.sagemaker }),
    jobs: {
      region: overrides.s3?.region,
      credentials: overrides.s3?.credentials ?? credentials,
      endpoints: {
        s3: overrides.s3?.endpoint,
        dynamodb: overrides.dynamo?.endpoint,
        sqs: overrides.sqsEndpoint,
      },
    },
  };
}

/** Asynchronous inference's parts, when the deployment configures its table, queue and bucket. */
function createAsyncInference(
  config: InferenceConfig,
  clients: InferenceClients,
  registry: CachedModelRegistry,
): AsyncInference | undefined {
  const { MAAS_JOBS_TABLE: table, MAAS_JOBS_QUEUE_URL: queueUrl, MAAS_ASYNC_BUCKET: bucket } = config;
  if (table === undefined || queueUrl === undefined || bucket === undefined) return undefined;
  return new AsyncInference({
    registry,
    store: new DynamoJobStore(table, jobClientConfig(clients, "dynamodb")),
    objects: new S3JobObjects(bucket, jobClientConfig(clients, "s3")),
    queue: new SqsJobQueue(queueUrl, jobClientConfig(clients, "sqs")),
    bucket,
    urlExpiresSeconds: config.MAAS_ASYNC_URL_EXPIRES_S,
    maxInputBytes: config.MAAS_ASYNC_MAX_INPUT_BYTES,
    retentionDays: config.MAAS_ASYNC_RETENTION_DAYS,
  });
}

/** An SDK client's settings for one of asynchronous inference's services. */
export function jobClientConfig(clients: InferenceClients, service: keyof JobEndpoints) {
  const { region, credentials, endpoints } = clients.jobs;
  const endpoint = endpoints[service];
  return {
    ...(region === undefined ? {} : { region }),
    ...(credentials === undefined ? {} : { credentials }),
    ...(endpoint === undefined ? {} : { endpoint }),
    // An emulator's endpoint takes the bucket in the path.
    ...(service === "s3" && endpoint !== undefined ? { forcePathStyle: true } : {}),
  };
}

export interface InferenceParts {
  readonly service: InferenceService;
  readonly registry: CachedModelRegistry;
  readonly artifacts: ArtifactCache;
  readonly sessions: SessionPool<WorkerSession>;
  readonly runner: ModelRunner;
  /** Undefined when the deployment has no jobs table, queue and bucket. */
  readonly jobs: AsyncInference | undefined;
  /** Undefined when the deployment names no capture bucket. */
  readonly capture: PayloadCapture | undefined;
}

/**
 * Wires the inference service from configuration and clients: the same code in Lambda and locally.
 * `logger` gets what the artifacts' self-healing did (a variant passed over, an artifact restored).
 */
export function createInferenceParts(
  config: InferenceConfig,
  clients: InferenceClients,
  logger?: Pick<Logger, "warn">,
): InferenceParts {
  const registry = new CachedModelRegistry(
    new RegistryReader(new DynamoHttpTable(clients.dynamo, config.MAAS_REGISTRY_TABLE)),
    {
      ttlMs: config.MAAS_REGISTRY_TTL_MS,
      missTtlMs: config.MAAS_REGISTRY_MISS_TTL_MS,
      // Keys are the models, versions and aliases this environment was asked for; lru-cache allocates
      // its slots up front (0.7 ms of the cold start at 10 000, 0.1 ms at 1 000).
      maxEntries: 1_000,
    },
  );
  const options = sessionOptions();
  const artifacts = new ArtifactCache({
    source: new S3HttpArtifactSource(clients.s3),
    directory: config.MAAS_ARTIFACT_DIR,
    maxBytes: config.MAAS_ARTIFACT_CACHE_BYTES,
    memoryMaxBytes: config.MAAS_ARTIFACT_MEMORY_BYTES,
    // A session's worker takes 20 to 40 ms to start and load onnxruntime: started while S3 sends the
    // object rather than at start-up, where it held up the registry read. Its failure surfaces at open.
    whileWaiting: () => WorkerSession.prestart(options),
  });
  const sessions = new SessionPool<WorkerSession>({
    create: (artifact) => WorkerSession.open(artifact, options, { inline: true }),
    maxSessions: config.MAAS_SESSION_MAX,
    maxBytes: config.MAAS_SESSION_BYTES,
    retryAfterMs: config.MAAS_SESSION_RETRY_MS,
    // A file being loaded into a session is never evicted from under it.
    hold: (artifact) => artifacts.hold(artifact),
  });
  const serving = new ServingArtifacts(artifacts, {
    restorer: new S3CopyRestorer(clients.s3),
    report: (event) => logger?.warn("artifact recovery", { ...event }),
  });
  const runner = new OnnxRunner(serving, sessions, config.MAAS_INFERENCE_DEADLINE_MS);
  const sagemakerRunner =
    config.MAAS_SAGEMAKER_ENDPOINT === undefined
      ? undefined
      : new SageMakerRunner({
          client: clients.sagemaker,
          endpointName: config.MAAS_SAGEMAKER_ENDPOINT,
          mode: config.MAAS_SAGEMAKER_MODE,
          attemptTimeoutMs: config.MAAS_SAGEMAKER_ATTEMPT_TIMEOUT_MS,
          deadlineMs: config.MAAS_SAGEMAKER_DEADLINE_MS,
          maxAttempts: config.MAAS_SAGEMAKER_MAX_ATTEMPTS,
        });
  const service = new InferenceService({
    registry,
    runners: { lambda: runner, ...(sagemakerRunner === undefined ? {} : { sagemaker: sagemakerRunner }) },
    server: { name: SERVER_NAME, version: SERVER_VERSION },
    maxResponseBytes: config.MAAS_MAX_RESPONSE_BYTES,
    deadlineMs: config.MAAS_INFERENCE_DEADLINE_MS,
    tokenizers: new CachedTokenizers(artifacts),
  });
  return {
    service,
    registry,
    artifacts,
    sessions,
    runner,
    jobs: createAsyncInference(config, clients, registry),
    capture:
      config.MAAS_CAPTURE_BUCKET === undefined
        ? undefined
        : new PayloadCapture({
            store: new S3CaptureStore(clients.s3, config.MAAS_CAPTURE_BUCKET),
            maxBufferBytes: config.MAAS_CAPTURE_BUFFER_BYTES,
            // The error names the bucket and key at most: payloads never reach the logs.
            onError: (error) => logger?.warn("capture not written", { error: String(error) }),
          }),
  };
}
