import { DynamoDBClient, type DynamoDBClientConfig } from "@aws-sdk/client-dynamodb";
import { S3Client, type S3ClientConfig } from "@aws-sdk/client-s3";
import { SageMakerRuntimeClient, type SageMakerRuntimeClientConfig } from "@aws-sdk/client-sagemaker-runtime";
import { fromEnv } from "@aws-sdk/credential-provider-env";
import type { InferenceSession } from "onnxruntime-node";
import { ArtifactCache } from "#aws/artifact-cache.ts";
import { DynamoModelRegistry } from "#aws/dynamo-registry.ts";
import { createOrtSession, loadOrt, OnnxRunner } from "#aws/onnx-runner.ts";
import { S3ArtifactSource } from "#aws/s3-artifact-source.ts";
import { SageMakerRunner } from "#aws/sagemaker-runner.ts";
import { SessionPool } from "#aws/session-pool.ts";
import { CachedModelRegistry } from "#core/cached-registry.ts";
import { InferenceService } from "#core/inference-service.ts";
import type { ModelRunner } from "#core/runner.ts";
import type { InferenceConfig } from "./config.ts";

export const SERVER_NAME = "serverless-maas";
export const SERVER_VERSION = "0.1.0";

export interface InferenceClients {
  readonly s3: S3Client;
  readonly dynamo: DynamoDBClient;
  readonly sagemaker: SageMakerRuntimeClient;
}

/**
 * Clients for the function's own region and credentials (AWS_ENDPOINT_URL_* redirects them); the
 * local stack passes its emulator endpoints and credentials as `overrides`.
 */
export function defaultClients(
  overrides: {
    s3?: S3ClientConfig;
    dynamo?: DynamoDBClientConfig;
    sagemaker?: SageMakerRuntimeClientConfig;
  } = {},
  env: Record<string, string | undefined> = process.env,
): InferenceClients {
  // Lambda puts the role's credentials in the environment: reading them directly skips loading the
  // whole default provider chain on the first call of a cold start.
  const credentials = env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY ? fromEnv() : undefined;
  return {
    // Artifacts are verified by sha256 end to end; the SDK's own CRC pass over every byte would only add latency.
    s3: new S3Client({ credentials, ...overrides.s3, responseChecksumValidation: "WHEN_REQUIRED" }),
    dynamo: new DynamoDBClient({ credentials, ...overrides.dynamo }),
    // The runner retries with its own deadline and jitter; SDK retries on top would multiply them.
    sagemaker: new SageMakerRuntimeClient({ credentials, maxAttempts: 1, ...overrides.sagemaker }),
  };
}

export interface InferenceParts {
  readonly service: InferenceService;
  readonly registry: CachedModelRegistry;
  readonly artifacts: ArtifactCache;
  readonly sessions: SessionPool<InferenceSession>;
  readonly runner: ModelRunner;
  /** Present when MAAS_SAGEMAKER_ENDPOINT names an endpoint. */
  readonly sagemakerRunner?: SageMakerRunner;
}

/** Wires the inference service from configuration and clients: the same code in Lambda and locally. */
export function createInferenceParts(config: InferenceConfig, clients: InferenceClients): InferenceParts {
  const registry = new CachedModelRegistry(
    new DynamoModelRegistry(clients.dynamo, config.MAAS_REGISTRY_TABLE),
    {
      ttlMs: config.MAAS_REGISTRY_TTL_MS,
      missTtlMs: config.MAAS_REGISTRY_MISS_TTL_MS,
      maxEntries: 10_000,
    },
  );
  const artifacts = new ArtifactCache({
    source: new S3ArtifactSource(clients.s3),
    directory: config.MAAS_ARTIFACT_DIR,
    maxBytes: config.MAAS_ARTIFACT_CACHE_BYTES,
  });
  const sessions = new SessionPool<InferenceSession>({
    create: (path) => createOrtSession(path),
    maxSessions: config.MAAS_SESSION_MAX,
    maxBytes: config.MAAS_SESSION_BYTES,
    retryAfterMs: config.MAAS_SESSION_RETRY_MS,
  });
  const runner = new OnnxRunner(artifacts, sessions);
  void loadOrt().catch(() => undefined); // surfaced by the first run that needs it
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
  });
  return { service, registry, artifacts, sessions, runner, ...(sagemakerRunner ? { sagemakerRunner } : {}) };
}
