import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createSocket } from "node:dgram";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { Logger } from "@aws-lambda-powertools/logger";
import {
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
} from "@aws-sdk/client-s3";
import { SQSClient } from "@aws-sdk/client-sqs";
import { DynamoDBDocumentClient, GetCommand, PutCommand } from "@aws-sdk/lib-dynamodb";
import type { CfnResource } from "aws-cdk-lib";
import type { CloudAssembly } from "aws-cdk-lib/cx-api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DynamoModelRegistry } from "#aws/registry/dynamo-registry.ts";
import { JOB_KEYS, type Job } from "#core/jobs/jobs.ts";
import {
  createRegisterHandler,
  createRegistrationDeps,
  loadRegisterConfig,
} from "#lambdas/register/handler.ts";
import { type FunctionAsset, functionAssets } from "../../lib/asset-report.ts";
import { LAZY_MODULES } from "../../lib/lazy-modules.ts";
import type { MaasFunction } from "../../lib/maas-function.ts";
import { type Emulators, startEmulators } from "../../local/emulators.ts";
import { startLocalSageMaker } from "../../local/sagemaker-runtime.ts";
import { buildIrisModel } from "../../models/iris.ts";
import { PADDLE_CLS_MANIFEST, PADDLE_CLS_MODEL } from "../../models/paddle-ocr.ts";
import { buildFixedShapeModel } from "../../models/zoo.ts";
import { foreignBinaries } from "./binaries.ts";
import { proxyEvent, s3ObjectCreatedBody, s3TestEventBody, sqsEvent } from "./events.ts";
import { maasStacks, ROOT } from "./support.ts";

/**
 * Runs the synthesized bundles themselves (cdk.out, not the TypeScript) against the local emulators:
 * what catches esbuild, ESM/CommonJS and native-module mistakes before a deploy does.
 * Synthesized for x86_64, this machine's architecture.
 */
const BUCKET = "maas-models";
const TABLE = "maas-registry";
const OPTIMIZE_QUEUE = "maas-optimize";
const JOBS_TABLE = "maas-jobs";
const JOBS_QUEUE = "maas-jobs";
const JOBS_DEAD_LETTER_QUEUE = `${JOBS_QUEUE}-dlq`;
const DRIVER = join(ROOT, "test/infra/invoke-bundle.mjs");
const IRIS_BATCH = [
  [5.1, 3.5, 1.4, 0.2],
  [6.7, 3.0, 5.2, 2.3],
  [5.9, 3.0, 4.2, 1.5],
];

let workDir: string;
let assembly: CloudAssembly;
let stacks: ReturnType<typeof maasStacks>;
let emulators: Emulators;
let registry: DynamoModelRegistry;
let sqs: SQSClient;
let documents: DynamoDBDocumentClient;

/** Puts a model where publishers do and returns the S3 notification body S3 would queue for it. */
async function upload(key: string, bytes: Uint8Array): Promise<string> {
  await emulators.s3Client().send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: bytes }));
  const head = await emulators.s3Client().send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }));
  return s3ObjectCreatedBody({
    bucket: BUCKET,
    key,
    size: bytes.byteLength,
    eTag: (head.ETag ?? "").replaceAll('"', ""),
  });
}

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), "maas-bundles-"));
  stacks = maasStacks({
    bundle: true,
    outdir: join(workDir, "cdk.out"),
    context: { architecture: "x86_64" },
  });
  assembly = stacks.app.synth();
  emulators = await startEmulators({
    dataDir: join(workDir, "emulators"),
    s3Port: 0,
    bucket: BUCKET,
    table: TABLE,
    // Created from jobsTableDefinition, as the stateful stack's jobs table is keyed.
    jobsTable: JOBS_TABLE,
    queues: [
      { name: OPTIMIZE_QUEUE },
      { name: JOBS_QUEUE, deadLetter: { name: JOBS_DEAD_LETTER_QUEUE, maxReceiveCount: 3 } },
    ],
  });
  registry = new DynamoModelRegistry(emulators.dynamoClient(), TABLE);
  documents = DynamoDBDocumentClient.from(emulators.dynamoClient());
  sqs = new SQSClient({
    region: emulators.region,
    credentials: emulators.credentials,
    endpoint: emulators.s3Endpoint,
  });
  // The demo model is published as the local stack does it: upload, then the register source (not bundle).
  const seed = createRegisterHandler(
    createRegistrationDeps(
      loadRegisterConfig({
        MAAS_REGISTRY_TABLE: TABLE,
        MAAS_OPTIMIZE_QUEUE_URL: emulators.queueUrl(OPTIMIZE_QUEUE),
        MAAS_WORK_DIR: join(workDir, "seed"),
      }),
      { s3: emulators.s3Client(), dynamo: emulators.dynamoClient(), sqs },
    ),
    new Logger({ serviceName: "maas-seed", logLevel: "SILENT" }),
  );
  const seeded = await seed(
    sqsEvent("register", [await upload("models/iris/1/model.onnx", buildIrisModel())]),
  );
  if (seeded.batchItemFailures.length > 0) throw new Error("could not seed iris version 1");
});

afterAll(async () => {
  sqs?.destroy();
  await emulators?.stop();
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

interface FunctionUnderTest {
  readonly asset: FunctionAsset;
  readonly handler: string;
  readonly environment: Record<string, unknown>;
  readonly memorySize: number;
}

function deployed(fn: MaasFunction): FunctionUnderTest {
  const logicalId = stacks.service.getLogicalId(fn.node.defaultChild as CfnResource);
  const template = assembly.getStackByName(stacks.service.stackName).template as {
    Resources: Record<string, { Properties: Record<string, unknown> }>;
  };
  const properties = template.Resources[logicalId]?.Properties ?? {};
  const asset = functionAssets(assembly).find((candidate) => candidate.logicalId === logicalId);
  if (!asset) throw new Error(`no asset for ${fn.node.path}`);
  return {
    asset,
    handler: String(properties.Handler),
    environment: (properties.Environment as { Variables: Record<string, unknown> }).Variables,
    memorySize: Number(properties.MemorySize),
  };
}

/** The function's environment from the template; references to the stateful stack become the emulators' names. */
function lambdaEnvironment(fn: FunctionUnderTest, name: string, tmp: string): Record<string, string> {
  const local: Record<string, string> = {
    MAAS_REGISTRY_TABLE: TABLE,
    MAAS_BUCKET: BUCKET,
    MAAS_OPTIMIZE_QUEUE_URL: emulators.queueUrl(OPTIMIZE_QUEUE),
    MAAS_OPTIMIZE_DEAD_LETTER_QUEUE_ARN: emulators.queueArn(`${OPTIMIZE_QUEUE}-dlq`),
    MAAS_JOBS_TABLE: JOBS_TABLE,
    MAAS_JOBS_QUEUE_URL: emulators.queueUrl(JOBS_QUEUE),
    MAAS_ASYNC_BUCKET: BUCKET,
    MAAS_CAPTURE_BUCKET: BUCKET,
    MAAS_JOBS_DEAD_LETTER_QUEUE_ARN: emulators.queueArn(JOBS_DEAD_LETTER_QUEUE),
  };
  const fromTemplate = Object.fromEntries(
    Object.entries(fn.environment).map(([key, value]) => {
      if (typeof value === "string") return [key, value];
      const replacement = local[key];
      if (replacement === undefined)
        throw new Error(`${name}: no local value for ${key} = ${JSON.stringify(value)}`);
      return [key, replacement];
    }),
  );
  return {
    PATH: process.env.PATH ?? "",
    HOME: tmp,
    TZ: ":UTC",
    LAMBDA_TASK_ROOT: fn.asset.directory,
    AWS_LAMBDA_FUNCTION_NAME: name,
    AWS_LAMBDA_FUNCTION_VERSION: "$LATEST",
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(fn.memorySize),
    AWS_REGION: emulators.region,
    AWS_DEFAULT_REGION: emulators.region,
    AWS_ACCESS_KEY_ID: emulators.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: emulators.credentials.secretAccessKey,
    AWS_ENDPOINT_URL_S3: emulators.s3Endpoint,
    AWS_ENDPOINT_URL_SQS: emulators.s3Endpoint,
    AWS_ENDPOINT_URL_DYNAMODB: emulators.dynamoEndpoint,
    POWERTOOLS_LOG_LEVEL: "WARN",
    ...fromTemplate,
    // Lambda's /tmp, per function and run.
    ...(fromTemplate.MAAS_WORK_DIR ? { MAAS_WORK_DIR: join(tmp, "work") } : {}),
    MAAS_ARTIFACT_DIR: join(tmp, "artifacts"),
  };
}

const run = promisify(execFile);

/**
 * Invokes the bundle's handler once in a fresh Node.js process with the function's environment, plus
 * `extraEnv` (what a stack with a SageMaker endpoint would set).
 */
async function invoke<T>(
  fn: MaasFunction,
  event: unknown,
  extraEnv: Record<string, string> = {},
): Promise<T> {
  const underTest = deployed(fn);
  const name = fn.node.id;
  const tmp = await mkdtemp(join(workDir, `${name}-`));
  await mkdir(join(tmp, "work"), { recursive: true });
  const [moduleName, exportName] = underTest.handler.split(".") as [string, string];
  const eventFile = join(tmp, "event.json");
  const resultFile = join(tmp, "result.json");
  await writeFile(eventFile, JSON.stringify(event));
  const { stdout, stderr } = await run(
    process.execPath,
    [DRIVER, join(underTest.asset.directory, `${moduleName}.mjs`), exportName, eventFile, resultFile],
    {
      cwd: underTest.asset.directory,
      env: { ...lambdaEnvironment(underTest, name, tmp), ...extraEnv },
      timeout: 90_000,
    },
  );
  const outcome = JSON.parse(await readFile(resultFile, "utf8")) as {
    ok: boolean;
    result?: T;
    error?: string;
  };
  if (!outcome.ok) throw new Error(`${name} threw: ${outcome.error}\n${stdout}\n${stderr}`);
  return outcome.result as T;
}

/** A V2 infer request body with the three rows of IRIS_BATCH. */
const IRIS_REQUEST = JSON.stringify({
  inputs: [{ name: "features", shape: [3, 4], datatype: "FP32", data: IRIS_BATCH.flat() }],
});

/** An API Gateway infer request for an iris-shaped model, with the three rows of IRIS_BATCH. */
function irisInferEvent(model: string, headers?: Record<string, string>) {
  return proxyEvent({
    method: "POST",
    path: `/v2/models/${model}/infer`,
    resource: "/v2/{proxy+}",
    identity: { apiKeyId: "key123" },
    body: IRIS_REQUEST,
    ...(headers === undefined ? {} : { headers }),
  });
}

/** A queued job for iris version 1 whose input is `body`, written straight to the bucket and the table. */
async function queueJob(body: string): Promise<Job> {
  const id = randomBytes(16).toString("base64url");
  const key = `${JOB_KEYS.inputPrefix}${id}`;
  await emulators
    .s3Client()
    .send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body, ContentType: "application/json" }));
  const now = Date.now();
  const job: Job = {
    id,
    model_name: "iris",
    model_version: 1,
    status: "queued",
    owner: "key123",
    input: { key },
    attempts: 0,
    created_at: now,
    updated_at: now,
    expires_at: Math.ceil(now / 1000) + 86_400,
  };
  await documents.send(new PutCommand({ TableName: JOBS_TABLE, Item: job }));
  return job;
}

async function jobRecord(id: string): Promise<Job | undefined> {
  const { Item } = await documents.send(
    new GetCommand({ TableName: JOBS_TABLE, Key: { id }, ConsistentRead: true }),
  );
  return Item as Job | undefined;
}

async function objectText(key: string): Promise<string> {
  const { Body } = await emulators.s3Client().send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return (await Body?.transformToString("utf8")) ?? "";
}

interface V2Response {
  model_name: string;
  model_version?: string;
  outputs: { name: string; shape: number[]; data: unknown[] }[];
}

interface ProxyResult {
  statusCode: number;
  headers?: Record<string, string>;
  body: string;
}

describe("synthesized bundles (x86_64) against the local emulators", () => {
  it("are built for x86_64 only", () => {
    for (const asset of functionAssets(assembly))
      expect(foreignBinaries(asset, "x64"), asset.path).toEqual([]);
  });

  it("inference answers an infer request for iris through onnxruntime from its asset", async () => {
    const result = await invoke<ProxyResult>(stacks.service.inference, irisInferEvent("iris"));
    expect(result.statusCode, result.body).toBe(200);
    expect(result.headers).toMatchObject({ "x-maas-backend": "lambda", "x-maas-model-version": "1" });
    const body = JSON.parse(result.body) as {
      model_name: string;
      outputs: { name: string; data: unknown[] }[];
    };
    expect(body.model_name).toBe("iris");
    expect(body.outputs.find((output) => output.name === "label")?.data).toEqual([
      "setosa",
      "virginica",
      "versicolor",
    ]);
  });

  it("keeps asynchronous inference's AWS clients beside the inference handler, not in it", async () => {
    const asset = deployed(stacks.service.inference).asset;
    for (const name of LAZY_MODULES) expect(asset.files).toContain(`node_modules/${name}/index.mjs`);
    // Bundled in, they took the handler's import from 85 to 247 ms: a cold start never compiles them.
    const handlerCode = await readFile(join(asset.directory, "index.mjs"), "utf8");
    // Commands the service never names: only the SDK packages themselves carry them.
    expect(handlerCode).not.toContain("ListObjectsV2Command");
    expect(handlerCode).not.toContain("ListQueuesCommand");
    expect(handlerCode).not.toContain("TransactWriteCommand");
  });

  it("keeps the ONNX decoder beside the inference handler, where the inline-runs check loads it from", async () => {
    const asset = deployed(stacks.service.inference).asset;
    const handlerCode = await readFile(join(asset.directory, "index.mjs"), "utf8");
    // A message of the ONNX schema that nothing of ours names: only onnx-proto's code carries it.
    expect(handlerCode).not.toContain("TensorShapeProto");

    const decoder = join(asset.directory, "node_modules", "onnx-proto", "index.mjs");
    const { default: onnxProto } = (await import(pathToFileURL(decoder).href)) as {
      default: typeof import("onnx-proto");
    };
    const model = onnxProto.onnx.ModelProto.decode(buildIrisModel());

    expect(model.graph?.node?.map((node) => node.opType)).toContain("MatMul");
  });

  it("inference serves a sagemaker-target version with the SageMaker client bundled beside it, not in it", async () => {
    const asset = deployed(stacks.service.inference).asset;
    expect(asset.files).toContain("node_modules/@aws-sdk/client-sagemaker-runtime/index.mjs");
    // The handler's own file does not carry the SDK: a cold start without SageMaker never compiles it.
    const handlerCode = await readFile(join(asset.directory, "index.mjs"), "utf8");
    expect(handlerCode).not.toContain("SageMakerRuntimeServiceException");

    const sagemaker = await startLocalSageMaker({
      dataDir: join(workDir, "sagemaker"),
      s3: {
        region: emulators.region,
        credentials: emulators.credentials,
        endpoint: emulators.s3Endpoint,
        forcePathStyle: true,
      },
      bucket: BUCKET,
    });
    try {
      // Registered for SageMaker as a model over the Lambda size limit would be.
      const register = createRegisterHandler(
        createRegistrationDeps(
          loadRegisterConfig({
            MAAS_REGISTRY_TABLE: TABLE,
            MAAS_OPTIMIZE_QUEUE_URL: emulators.queueUrl(OPTIMIZE_QUEUE),
            MAAS_WORK_DIR: join(workDir, "seed-gpu"),
            MAAS_LAMBDA_MAX_MODEL_BYTES: "1",
            MAAS_SAGEMAKER_MODEL_PREFIX: sagemaker.modelPrefix,
          }),
          { s3: emulators.s3Client(), dynamo: emulators.dynamoClient(), sqs },
        ),
        new Logger({ serviceName: "maas-seed", logLevel: "SILENT" }),
      );
      const registered = await register(
        sqsEvent("register", [await upload("models/iris-gpu/1/model.onnx", buildIrisModel())]),
      );
      expect(registered.batchItemFailures).toEqual([]);
      expect(await registry.getVersionConsistent("iris-gpu", 1)).toMatchObject({
        status: "ready",
        target: "sagemaker",
      });

      const result = await invoke<ProxyResult>(stacks.service.inference, irisInferEvent("iris-gpu"), {
        MAAS_SAGEMAKER_ENDPOINT: sagemaker.endpointName,
        MAAS_SAGEMAKER_MODE: "multi-model",
        AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME: sagemaker.url,
      });
      expect(result.statusCode, result.body).toBe(200);
      expect(result.headers).toMatchObject({ "x-maas-backend": "sagemaker" });
      const body = JSON.parse(result.body) as { outputs: { name: string; data: unknown[] }[] };
      expect(body.outputs.find((output) => output.name === "label")?.data).toEqual([
        "setosa",
        "virginica",
        "versicolor",
      ]);
    } finally {
      await sagemaker.close();
    }
  });

  it("inference sends a sampled request's trace to the X-Ray daemon and captures an opted-in version's exchange", async () => {
    const daemon = createSocket("udp4");
    const datagrams: string[] = [];
    daemon.on("message", (message) => datagrams.push(message.toString("utf8")));
    await new Promise<void>((bound) => daemon.bind(0, "127.0.0.1", bound));
    const iris = await registry.getVersionConsistent("iris", 1);
    if (iris === undefined) throw new Error("iris is not registered");
    const capture = { samplePercent: 100, requests: true, responses: true };
    expect(await registry.updateVersion("iris", 1, iris.status, { capture })).toBe(true);
    try {
      const result = await invoke<ProxyResult>(stacks.service.inference, irisInferEvent("iris"), {
        AWS_XRAY_DAEMON_ADDRESS: `127.0.0.1:${(daemon.address() as AddressInfo).port}`,
        _X_AMZN_TRACE_ID: "Root=1-6755c0de-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=1",
      });
      expect(result.statusCode, result.body).toBe(200);
      // The process has exited: what it sent after the response has gone.
      for (let i = 0; i < 100 && datagrams.length === 0; i++)
        await new Promise((wake) => setTimeout(wake, 10));
      const [datagram] = datagrams;
      const trace = JSON.parse(datagram?.slice(datagram.indexOf("\n") + 1) ?? "{}") as {
        trace_id: string;
        annotations: Record<string, unknown>;
        subsegments: { name: string; subsegments?: { name: string }[] }[];
      };
      expect(trace).toMatchObject({
        trace_id: "1-6755c0de-0123456789abcdef01234567",
        annotations: { model: "iris" },
      });
      const fetch = trace.subsegments.find((subsegment) => subsegment.name === "artifact fetch");
      expect(fetch?.subsegments?.map((call) => call.name)).toContain("S3");

      const listed = await emulators
        .s3Client()
        .send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: "capture/iris/1/" }));
      const keys = (listed.Contents ?? []).map((object) => object.Key as string);
      expect(keys).toHaveLength(1);
      const line = JSON.parse((await objectText(keys[0] as string)).trim()) as {
        captureData: { endpointInput: { data: string }; endpointOutput: { data: string } };
      };
      expect(line.captureData.endpointInput.data).toBe(IRIS_REQUEST);
      expect(JSON.parse(line.captureData.endpointOutput.data)).toMatchObject({ model_name: "iris" });
    } finally {
      daemon.close();
      const current = await registry.getVersionConsistent("iris", 1);
      if (current !== undefined)
        await registry.updateVersion("iris", 1, current.status, {
          capture: { ...capture, samplePercent: 0 },
        });
    }
  });

  it("inference answers the open readiness probe", async () => {
    const result = await invoke<ProxyResult>(
      stacks.service.inference,
      proxyEvent({ method: "GET", path: "/v2/health/ready", resource: "/v2/health/ready" }),
    );
    expect(result.statusCode, result.body).toBe(200);
  });

  it("jobs runs a queued job from its input in the bucket to succeeded, with the V2 response as its result", async () => {
    const job = await queueJob(IRIS_REQUEST);

    const result = await invoke<{ batchItemFailures: unknown[] }>(
      stacks.service.jobsWorker,
      sqsEvent(JOBS_QUEUE, [JSON.stringify({ id: job.id })]),
    );

    expect(result).toEqual({ batchItemFailures: [] });
    const record = await jobRecord(job.id);
    expect(record).toMatchObject({
      status: "succeeded",
      attempts: 1,
      output: { key: `${JOB_KEYS.resultPrefix}${job.id}`, contentType: "application/json" },
    });
    expect(record?.error).toBeUndefined();
    const response = JSON.parse(await objectText(`${JOB_KEYS.resultPrefix}${job.id}`)) as V2Response;
    expect(response).toMatchObject({ model_name: "iris", model_version: "1" });
    expect(response.outputs.find((output) => output.name === "label")).toMatchObject({
      shape: [3],
      data: ["setosa", "virginica", "versicolor"],
    });
    const probabilities = response.outputs.find((output) => output.name === "probabilities");
    expect(probabilities?.shape).toEqual([3, 3]);
  });

  it("jobs ends a job failed, with the model's complaint, when its input does not fit the model", async () => {
    const job = await queueJob(
      JSON.stringify({ inputs: [{ name: "features", shape: [1, 3], datatype: "FP32", data: [1, 2, 3] }] }),
    );

    const result = await invoke<{ batchItemFailures: unknown[] }>(
      stacks.service.jobsWorker,
      sqsEvent(JOBS_QUEUE, [JSON.stringify({ id: job.id })]),
    );

    // A caller's mistake is final at once: nothing for SQS to deliver again.
    expect(result).toEqual({ batchItemFailures: [] });
    const record = await jobRecord(job.id);
    expect(record).toMatchObject({ status: "failed", attempts: 1, error: expect.stringMatching(/shape/i) });
    expect(record?.output).toBeUndefined();
  });

  it("jobs marks a job failed when its message arrives from the jobs dead-letter queue", async () => {
    const job = await queueJob(IRIS_REQUEST);

    const result = await invoke<{ batchItemFailures: unknown[] }>(
      stacks.service.jobsWorker,
      sqsEvent(JOBS_DEAD_LETTER_QUEUE, [JSON.stringify({ id: job.id })]),
    );

    expect(result).toEqual({ batchItemFailures: [] });
    expect(await jobRecord(job.id)).toMatchObject({
      status: "failed",
      attempts: 0,
      error: expect.stringContaining("submit it again"),
    });
  });

  it("inference queues a respond-async request that the jobs bundle runs, then answers its status with the result's URL", async () => {
    const submitted = await invoke<ProxyResult>(
      stacks.service.inference,
      irisInferEvent("iris", { Prefer: "respond-async" }),
    );
    expect(submitted.statusCode, submitted.body).toBe(202);
    const { id } = JSON.parse(submitted.body) as { id: string; status: string };
    expect(submitted.headers).toMatchObject({ location: `/v2/jobs/${id}` });
    expect(await jobRecord(id)).toMatchObject({ status: "queued", model_name: "iris", model_version: 1 });
    const queued = emulators.fauxqs.inspectQueue(JOBS_QUEUE)?.messages.ready ?? [];
    expect(queued.map((message) => JSON.parse(message.body) as unknown)).toContainEqual({ id });

    const ran = await invoke<{ batchItemFailures: unknown[] }>(
      stacks.service.jobsWorker,
      sqsEvent(JOBS_QUEUE, [JSON.stringify({ id })]),
    );
    expect(ran).toEqual({ batchItemFailures: [] });

    const status = await invoke<ProxyResult>(
      stacks.service.inference,
      proxyEvent({
        method: "GET",
        path: `/v2/jobs/${id}`,
        resource: "/v2/{proxy+}",
        identity: { apiKeyId: "key123" },
      }),
    );
    expect(status.statusCode, status.body).toBe(200);
    const view = JSON.parse(status.body) as { status: string; output_url?: string };
    expect(view.status).toBe("succeeded");
    const download = await fetch(view.output_url ?? "", { signal: AbortSignal.timeout(30_000) });
    expect(download.status).toBe(200);
    const response = (await download.json()) as V2Response;
    expect(response.outputs.find((output) => output.name === "label")?.data).toEqual([
      "setosa",
      "virginica",
      "versicolor",
    ]);
  });

  it("register registers an uploaded model from its S3 notification and reports no failures", async () => {
    const key = "models/fixed/1/model.onnx";
    const notification = await upload(key, buildFixedShapeModel());

    const result = await invoke<{ batchItemFailures: unknown[] }>(
      stacks.service.register,
      sqsEvent("register", [s3TestEventBody(BUCKET), notification]),
    );

    expect(result).toEqual({ batchItemFailures: [] });
    const version = await registry.getVersionConsistent("fixed", 1);
    expect(version).toMatchObject({ status: "ready", target: "lambda", source: { key } });
    const artifact = version?.artifact;
    expect(artifact?.key).toMatch(/^artifacts\/sha256\/[0-9a-f]{64}\.onnx$/);
    await emulators.s3Client().send(new HeadObjectCommand({ Bucket: BUCKET, Key: artifact?.key }));
    const optimize = emulators.fauxqs.inspectQueue(OPTIMIZE_QUEUE)?.messages.ready ?? [];
    expect(optimize.map((message) => JSON.parse(message.body) as unknown)).toContainEqual(
      expect.objectContaining({ name: "fixed", version: 1 }),
    );
  });

  it("register checks an image classifier's chain with the bundled sharp, and inference labels an image with it", async () => {
    await emulators.s3Client().send(
      new PutObjectCommand({
        Bucket: BUCKET,
        Key: "models/textdir/1/maas.json",
        Body: JSON.stringify(PADDLE_CLS_MANIFEST),
      }),
    );
    const model = await readFile(PADDLE_CLS_MODEL);
    const notification = await upload("models/textdir/1/model.onnx", model);
    const registered = await invoke<{ batchItemFailures: unknown[] }>(
      stacks.service.register,
      sqsEvent("register", [notification]),
    );
    expect(registered).toEqual({ batchItemFailures: [] });
    const version = await registry.getVersionConsistent("textdir", 1);
    expect(version, version?.reason).toMatchObject({
      status: "ready",
      task: { kind: "image-classification" },
    });

    // A white strip with a dark bar: any 48 x 192 PNG the bundled sharp must decode.
    const { default: sharp } = await import("sharp");
    const image = await sharp({ create: { width: 192, height: 48, channels: 3, background: "white" } })
      .composite([
        { input: { create: { width: 120, height: 16, channels: 3, background: "black" } }, top: 16, left: 8 },
      ])
      .png()
      .toBuffer();
    const response = await invoke<ProxyResult>(
      stacks.service.inference,
      proxyEvent({
        method: "POST",
        path: "/v2/models/textdir/infer",
        resource: "/v2/{proxy+}",
        identity: { apiKeyId: "key123" },
        body: JSON.stringify({
          inputs: [{ name: "image", datatype: "BYTES", shape: [1], data: [image.toString("base64")] }],
          parameters: { top_k: 2 },
        }),
      }),
    );
    expect(response.statusCode, response.body).toBe(200);
    const [label, score] = (JSON.parse(response.body) as V2Response).outputs;
    expect(label).toMatchObject({ name: "label", shape: [1, 2] });
    expect([...(label?.data ?? [])].sort()).toEqual(["0", "180"]);
    expect(((score?.data ?? []) as number[]).reduce((sum, value) => sum + value, 0)).toBeCloseTo(1, 4);
  });

  it("admin answers a version lookup from a SigV4 caller", async () => {
    const result = await invoke<ProxyResult>(
      stacks.service.admin,
      proxyEvent({
        method: "GET",
        path: "/admin/models/iris/versions/1",
        resource: "/admin/{proxy+}",
        identity: { userArn: "arn:aws:iam::000000000000:user/operator" },
      }),
    );
    expect(result.statusCode, result.body).toBe(200);
    expect(JSON.parse(result.body)).toMatchObject({ status: "ready", target: "lambda" });
  });

  it("optimize takes iris from its SQS message to ready with optimizedAt and its variants stored", async () => {
    const result = await invoke<{ batchItemFailures: unknown[] }>(
      stacks.service.optimize,
      sqsEvent("optimize", [JSON.stringify({ name: "iris", version: 1 })]),
    );

    expect(result).toEqual({ batchItemFailures: [] });
    const version = await registry.getVersionConsistent("iris", 1);
    expect(version).toMatchObject({ status: "ready", optimizedAt: expect.any(String) });
    expect(version?.optimizeAttempt?.error).toBeUndefined();
    // Variants the optimizer built are in the bucket under their content-addressed keys.
    const built = (version?.variants ?? []).filter((variant) => variant.kind !== "original");
    expect(built.map((variant) => variant.kind)).toContain("graph-extended");
    const stored = built.flatMap((variant) => (variant.artifact ? [variant.artifact] : []));
    expect(stored.length).toBeGreaterThan(0);
    for (const artifact of stored) {
      expect(artifact.key).toMatch(/^artifacts\/sha256\/[0-9a-f]{64}\.onnx$/);
      await emulators.s3Client().send(new HeadObjectCommand({ Bucket: BUCKET, Key: artifact.key }));
    }
  });
});
