import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import type { SQSEvent, SQSRecord } from "aws-lambda";
import { OrtCandidateRuntime } from "#aws/onnx/candidate-runtime.ts";
import { DynamoModelRegistry } from "#aws/registry/dynamo-registry.ts";
import { S3DecisionStore } from "#aws/s3/decision-store.ts";
import { S3VariantStore } from "#aws/s3/variant-store.ts";
import type { ModelSignature, ModelVersion, ServableVersion } from "#core/model.ts";
import { inspectModel } from "#core/onnx/inspect.ts";
import type { DecisionStore } from "#core/optimize/decision.ts";
import {
  type CandidateRuntime,
  type CandidateSession,
  DEFAULT_OPTIMIZER_SETTINGS,
  type OptimizerDeps,
  type OptimizerSettings,
} from "#core/optimize/optimization.ts";
import { artifactKey, type Manifest, manifestKey } from "#core/registry/manifest.ts";
import type { ModelRegistryWriter } from "#core/registry/registry.ts";
import { type Emulators, startEmulators } from "../../local/emulators.ts";

/** The optimizer's real parts on the local emulators: one per test file. */
export interface OptimizerBench {
  readonly dataDir: string;
  readonly emulators: Emulators;
  readonly registry: DynamoModelRegistry;
  readonly s3: S3Client;
  readonly store: S3VariantStore;
  readonly decisions: S3DecisionStore;
  readonly runtime: OrtCandidateRuntime;
}

export const BUCKET = "models";
const TABLE = "registry";

export async function startOptimizerBench(name: string): Promise<OptimizerBench> {
  const dataDir = await mkdtemp(join(tmpdir(), `maas-${name}-`));
  const emulators = await startEmulators({ dataDir, s3Port: 0, bucket: BUCKET, table: TABLE });
  const s3 = emulators.s3Client();
  return {
    dataDir,
    emulators,
    registry: new DynamoModelRegistry(emulators.dynamoClient(), TABLE),
    s3,
    store: new S3VariantStore(s3),
    decisions: new S3DecisionStore(s3),
    runtime: new OrtCandidateRuntime(1),
  };
}

export async function stopOptimizerBench(bench: OptimizerBench | undefined): Promise<void> {
  await bench?.emulators.stop();
  if (bench?.dataDir) await rm(bench.dataDir, { recursive: true, force: true });
}

export const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

export interface SeedOptions {
  readonly version?: number;
  readonly target?: ModelVersion["target"];
  readonly manifest?: Manifest;
  /** Instead of the model's own: what registration would have recorded. */
  readonly signature?: ModelSignature;
  readonly changes?: Pick<Partial<ModelVersion>, "variantChoice" | "labels">;
}

/** A version as registration leaves it: ready, its upload at its content-addressed key. */
export async function seedVersion(
  bench: OptimizerBench,
  name: string,
  bytes: Uint8Array,
  options: SeedOptions = {},
): Promise<ServableVersion> {
  const version = options.version ?? 1;
  const sha = sha256(bytes);
  await bench.s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: artifactKey(sha), Body: bytes }));
  if (options.manifest) {
    await bench.s3.send(
      new PutObjectCommand({
        Bucket: BUCKET,
        Key: manifestKey(name, version),
        Body: JSON.stringify(options.manifest),
      }),
    );
  }
  const now = new Date().toISOString();
  const record = {
    name,
    version,
    status: "ready" as const,
    target: options.target ?? "lambda",
    artifact: { bucket: BUCKET, key: artifactKey(sha), sha256: sha, bytes: bytes.byteLength },
    signature: options.signature ?? inspectModel(bytes).signature,
    variants: [],
    optimizeState: "queued" as const,
    createdAt: now,
    updatedAt: now,
    ...options.changes,
  };
  await bench.registry.createVersion(record);
  return record;
}

export function optimizerDeps(
  bench: OptimizerBench,
  settings: Partial<OptimizerSettings> = {},
  overrides: Partial<OptimizerDeps> = {},
): OptimizerDeps {
  return {
    registry: bench.registry,
    store: bench.store,
    decisions: bench.decisions,
    runtime: bench.runtime,
    now: () => new Date().toISOString(),
    settings: {
      ...DEFAULT_OPTIMIZER_SETTINGS,
      workDir: join(bench.dataDir, "work"),
      benchmarkRuns: 5,
      warmupRuns: 1,
      ...settings,
    },
    ...overrides,
  };
}

export async function recordOf(bench: OptimizerBench, name: string, version = 1): Promise<ModelVersion> {
  const found = await bench.registry.getVersionConsistent(name, version);
  if (found === undefined) throw new Error(`no record for ${name} v${version}`);
  return found;
}

/** The variant kind a candidate file is for: the optimizer names them `<kind>.onnx`. */
export const kindOf = (path: string) => basename(path, ".onnx");

const sleep = (ms: number) => new Promise((wake) => setTimeout(wake, ms));

/**
 * onnxruntime with each session's runs changed by kind: a delay (timing under the test's control),
 * or outputs rewritten. `delayMs` is asked when the session opens.
 */
export function steeredRuntime(
  base: CandidateRuntime,
  steer: {
    readonly delayMs?: (kind: string) => number;
    readonly outputs?: (kind: string, outputs: CandidateSessionOutputs) => CandidateSessionOutputs;
    readonly onOpen?: (kind: string) => void;
    readonly onOptimizeGraph?: () => void;
  },
): CandidateRuntime {
  return {
    optimizeGraph: (source, target, level) => {
      steer.onOptimizeGraph?.();
      return base.optimizeGraph(source, target, level);
    },
    open: async (path) => {
      const kind = kindOf(path);
      steer.onOpen?.(kind);
      const session = await base.open(path);
      const delay = steer.delayMs?.(kind) ?? 0;
      return {
        run: async (inputs, outputs) => {
          if (delay > 0) await sleep(delay);
          const results = await session.run(inputs, outputs);
          return steer.outputs ? steer.outputs(kind, results) : results;
        },
        release: () => session.release(),
      };
    },
  };
}

type CandidateSessionOutputs = Awaited<ReturnType<CandidateSession["run"]>>;

/** A decision store in memory, conditional as S3's is (the emulator's PUT ignores If-None-Match). */
export class MemoryDecisionStore implements DecisionStore {
  readonly objects = new Map<string, string>();

  async read(bucket: string, key: string): Promise<string | undefined> {
    return this.objects.get(`${bucket}/${key}`);
  }

  async putOnce(bucket: string, key: string, text: string): Promise<boolean> {
    if (this.objects.has(`${bucket}/${key}`)) return false;
    this.objects.set(`${bucket}/${key}`, text);
    return true;
  }
}

/** The registry with some methods replaced; the rest bound to the real one. */
export function registryWith(
  registry: ModelRegistryWriter,
  overrides: Partial<ModelRegistryWriter>,
): ModelRegistryWriter {
  return new Proxy(registry, {
    get(target, property, receiver) {
      if (property in overrides) return overrides[property as keyof ModelRegistryWriter];
      const value = Reflect.get(target, property, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

export const OPTIMIZE_QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:optimize";
export const OPTIMIZE_DLQ_ARN = "arn:aws:sqs:us-east-1:000000000000:optimize-dlq";

/** An SQS record as the optimize function's event source delivers it. */
export function sqsRecord(
  body: string,
  options: { messageId?: string; receives?: number; source?: string } = {},
): SQSRecord {
  return {
    messageId: options.messageId ?? "message-1",
    receiptHandle: "",
    body,
    attributes: {
      ApproximateReceiveCount: String(options.receives ?? 1),
      SentTimestamp: "0",
      SenderId: "test",
      ApproximateFirstReceiveTimestamp: "0",
    },
    messageAttributes: {},
    md5OfBody: "",
    eventSource: "aws:sqs",
    eventSourceARN: options.source ?? OPTIMIZE_QUEUE_ARN,
    awsRegion: "us-east-1",
  };
}

export const sqsEvent = (...records: SQSRecord[]): SQSEvent => ({ Records: records });
