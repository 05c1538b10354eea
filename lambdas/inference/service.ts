import type { Logger } from "@aws-lambda-powertools/logger";
import type { SageMakerRuntimeClientConfig } from "@aws-sdk/client-sagemaker-runtime";
import { AwsHttpClient, type AwsHttpOptions, credentialsFromEnv } from "#aws/http/aws-http.ts";
import { ArtifactCache } from "#aws/onnx/artifact-cache.ts";
import { OnnxRunner, sessionOptions } from "#aws/onnx/runner.ts";
import { ServingArtifacts } from "#aws/onnx/serving-artifacts.ts";
import { SessionPool } from "#aws/onnx/session-pool.ts";
import { WorkerSession } from "#aws/onnx/worker-session.ts";
import { DynamoHttpTable } from "#aws/registry/dynamo-http-table.ts";
import { RegistryReader } from "#aws/registry/reader.ts";
import { S3CopyRestorer } from "#aws/s3/artifact-restorer.ts";
import { S3HttpArtifactSource } from "#aws/s3/http-source.ts";
import { LazySageMakerClient, SageMakerRunner } from "#aws/sagemaker/runner.ts";
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
  };
}

export interface InferenceParts {
  readonly service: InferenceService;
  readonly registry: CachedModelRegistry;
  readonly artifacts: ArtifactCache;
  readonly sessions: SessionPool<WorkerSession>;
  readonly runner: ModelRunner;
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
    create: (artifact) => WorkerSession.open(artifact, options),
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
  });
  return { service, registry, artifacts, sessions, runner };
}
