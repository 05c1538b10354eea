/**
 * Local stand-in for the SageMaker runtime API (InvokeEndpoint) in front of the GPU container server,
 * run in this process on CPU. The real `@aws-sdk/client-sagemaker-runtime` client is pointed at it
 * (`endpoint: sagemaker.url`), so the router's SDK code path is the one used in AWS.
 *
 *   const sagemaker = await startLocalSageMaker({ dataDir, s3: { endpoint, region, credentials }, bucket });
 *   new SageMakerRuntimeClient({ endpoint: sagemaker.url, region, credentials });
 *   await sagemaker.close();
 *
 * What it reproduces from SageMaker:
 * - `POST /endpoints/<name>/invocations` (restJson1): the body and `Content-Type`, `Accept`,
 *   `X-Amzn-SageMaker-Target-Model`, `-Custom-Attributes` and `-Inference-Id` headers go to the
 *   container; the answer comes back with `x-Amzn-Invoked-Production-Variant`.
 * - a multi-model endpoint: for a TargetModel it has not loaded, it downloads
 *   `s3://<bucket>/<prefix><TargetModel>` (the endpoint's ModelDataUrl), extracts it to
 *   `<dataDir>/sagemaker/models/<model_name>/model` (SageMaker's /opt/ml/models), calls the
 *   container's `POST /models`, and on a 507 unloads its least recently used model and tries again;
 *   then `POST /models/<model_name>/invoke`. Without a TargetModel: the container's `/invocations`.
 * - errors as the SDK parses them (`x-amzn-ErrorType` + JSON): a container error is a 424
 *   `ModelError` with `OriginalStatusCode` and `OriginalMessage`; no answer within the invocation
 *   timeout (60 s) a `ModelError` saying so; an unknown endpoint, a missing model archive or a body
 *   over 6 MB a `ValidationError`.
 */
import { createHash, randomUUID } from "node:crypto";
import { rename, rm, stat } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { join } from "node:path";
import { Readable } from "node:stream";
import { GetObjectCommand, S3Client, type S3ClientConfig } from "@aws-sdk/client-s3";
import { isMissing } from "#aws/s3/upload-store.ts";
import { normalizePrefix } from "#aws/sagemaker/layout.ts";
import { extractModelArchive } from "#aws/sagemaker/model-archive.ts";
import { type GpuServerConfig, loadGpuServerConfig } from "../containers/gpu/config.ts";
import { readBody } from "../containers/gpu/read-body.ts";
import { type GpuServer, startGpuServer } from "../containers/gpu/server.ts";
import { listen } from "./gateway.ts";

export const LOCAL_SAGEMAKER_ENDPOINT = "maas-gpu-local";
/** The endpoint's ModelDataUrl inside the local model bucket. */
export const LOCAL_SAGEMAKER_PREFIX = "sagemaker/models/";

const ACCOUNT_ID = "000000000000";
const REGION = "us-east-1";
const MAX_PAYLOAD_BYTES = 6 * 1024 * 1024;
const VARIANT = "AllTraffic";
const CONTAINER = "primary";

export interface LocalSageMakerOptions {
  /** The container's model directory (its /opt/ml/models) lives under `<dataDir>/sagemaker`. */
  readonly dataDir: string;
  /** Where model archives are read from, as the endpoint's execution role would (its own client). */
  readonly s3: S3ClientConfig;
  readonly bucket: string;
  /** @default LOCAL_SAGEMAKER_PREFIX */
  readonly modelPrefix?: string;
  /** @default LOCAL_SAGEMAKER_ENDPOINT */
  readonly endpointName?: string;
  /** @default 0 (any free port) */
  readonly port?: number;
  /** @default "127.0.0.1" */
  readonly host?: string;
  /** Container settings (its environment variables), e.g. `{ MAAS_MAX_BATCH_SIZE: "8" }`. */
  readonly containerEnv?: Record<string, string>;
  /** SageMaker's limit on one invocation. @default 60_000 */
  readonly invocationTimeoutMs?: number;
  /** Container log lines; @default none */
  readonly log?: (message: string, fields?: Record<string, unknown>) => void;
}

export interface LocalSageMaker {
  /** The SageMaker runtime endpoint URL, for the SDK client's `endpoint`. */
  readonly url: string;
  readonly endpointName: string;
  readonly modelPrefix: string;
  readonly container: GpuServer;
  close(): Promise<void>;
}

class SageMakerFault extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    readonly body: Record<string, unknown>,
  ) {
    super(String(body.Message ?? type));
    this.name = "SageMakerFault";
  }
}

const validationError = (message: string) => new SageMakerFault(400, "ValidationError", { Message: message });

interface ContainerAnswer {
  readonly status: number;
  readonly body: Buffer;
  readonly headers: Headers;
}

export async function startLocalSageMaker(options: LocalSageMakerOptions): Promise<LocalSageMaker> {
  const endpointName = options.endpointName ?? LOCAL_SAGEMAKER_ENDPOINT;
  const modelPrefix = normalizePrefix(options.modelPrefix ?? LOCAL_SAGEMAKER_PREFIX);
  const modelsDir = join(options.dataDir, "sagemaker", "models");
  const invocationTimeoutMs = options.invocationTimeoutMs ?? 60_000;
  const config: GpuServerConfig = loadGpuServerConfig({
    MAAS_PORT: "0",
    MAAS_HOST: "127.0.0.1",
    MAAS_MODEL_DIRS: modelsDir,
    MAAS_SCRATCH_DIR: join(options.dataDir, "sagemaker", "scratch"),
    // No GPU here: skip the cuda and webgpu probes (and their driver noise on stderr).
    MAAS_EXECUTION_PROVIDERS: "cpu",
    ...options.containerEnv,
  });
  const container = await startGpuServer({
    config,
    s3: { forcePathStyle: true, ...options.s3 },
    log: options.log ?? (() => undefined),
  });
  const s3 = new S3Client({ forcePathStyle: true, ...options.s3 });
  /** model_name -> TargetModel, in recency order: what SageMaker believes the container holds. */
  const loaded = new Map<string, string>();
  const loading = new Map<string, Promise<void>>();

  async function callContainer(
    path: string,
    init: { method: string; body?: Buffer | string; headers?: Record<string, string> },
  ): Promise<ContainerAnswer> {
    let response: Response;
    try {
      response = await fetch(`${container.url}${path}`, {
        method: init.method,
        headers: init.headers,
        body: init.body,
        signal: AbortSignal.timeout(invocationTimeoutMs),
      });
    } catch (error) {
      if ((error as Error).name === "TimeoutError") {
        throw modelError(
          0,
          `Your invocation timed out while waiting for a response from container ${CONTAINER}. Review the latency metrics for each container in Amazon CloudWatch, resolve the issue, and try again.`,
        );
      }
      throw new SageMakerFault(500, "InternalFailure", { Message: "An internal failure occurred." });
    }
    return {
      status: response.status,
      body: Buffer.from(await response.arrayBuffer()),
      headers: response.headers,
    };
  }

  function modelError(status: number, original: string): SageMakerFault {
    const kind = status >= 500 || status === 0 ? "server" : "client";
    const logGroup = `/aws/sagemaker/Endpoints/${endpointName}`;
    return new SageMakerFault(424, "ModelError", {
      ErrorCode: `${kind.toUpperCase()}_ERROR_FROM_MODEL`,
      Message:
        `Received ${kind} error (${status}) from ${CONTAINER} with message "${original}". See ` +
        `https://${REGION}.console.aws.amazon.com/cloudwatch/home?region=${REGION}#logEventViewer:group=${logGroup} ` +
        `in account ${ACCOUNT_ID} for more information.`,
      OriginalStatusCode: status,
      OriginalMessage: original,
      LogStreamArn: `arn:aws:logs:${REGION}:${ACCOUNT_ID}:log-group:${logGroup}`,
    });
  }

  /** Downloads and extracts `<prefix><target>` where SageMaker would, once. */
  async function stageModel(target: string, modelName: string): Promise<string> {
    const directory = join(modelsDir, modelName, "model");
    if (await stat(directory).catch(() => undefined)) return directory;
    const key = `${modelPrefix}${target}`;
    let body: Readable;
    try {
      const object = await s3.send(new GetObjectCommand({ Bucket: options.bucket, Key: key }));
      if (!(object.Body instanceof Readable)) throw new Error("no body");
      body = object.Body;
    } catch (error) {
      if (!isMissing(error)) throw error;
      throw validationError(
        `Failed to download model data(bucket: ${options.bucket}, key: ${key}). Please ensure that there is an object located at the URL and that the role passed to CreateModel has permissions to download the model.`,
      );
    }
    const partial = `${directory}.${randomUUID()}.partial`;
    try {
      await extractModelArchive(body, partial);
      await rename(partial, directory);
    } finally {
      await rm(partial, { recursive: true, force: true });
    }
    return directory;
  }

  /** Makes the container hold the target's model, as SageMaker's multi-model orchestration does. */
  async function ensureLoaded(target: string, modelName: string): Promise<void> {
    if (loaded.has(modelName)) {
      loaded.delete(modelName);
      loaded.set(modelName, target);
      return;
    }
    let pending = loading.get(modelName);
    if (pending === undefined) {
      pending = (async () => {
        const url = await stageModel(target, modelName);
        for (;;) {
          const answer = await callContainer("/models", {
            method: "POST",
            headers: { "content-type": "application/json", "x-amzn-sagemaker-target-model": target },
            body: JSON.stringify({ model_name: modelName, url }),
          });
          if (answer.status === 200 || answer.status === 409) break;
          const victim = answer.status === 507 ? [...loaded.keys()][0] : undefined;
          if (victim === undefined) throw modelError(answer.status, answer.body.toString("utf8"));
          loaded.delete(victim);
          await callContainer(`/models/${encodeURIComponent(victim)}`, { method: "DELETE" });
        }
        loaded.set(modelName, target);
      })().finally(() => loading.delete(modelName));
      loading.set(modelName, pending);
    }
    await pending;
  }

  async function invoke(req: IncomingMessage, endpoint: string, res: ServerResponse): Promise<void> {
    if (endpoint !== endpointName) {
      throw validationError(`Endpoint ${endpoint} of account ${ACCOUNT_ID} not found.`);
    }
    const body = await readPayload(req);
    const forwarded: Record<string, string> = {
      "content-type": header(req, "content-type") ?? "application/octet-stream",
      accept: header(req, "accept") ?? "*/*",
    };
    for (const name of ["x-amzn-sagemaker-custom-attributes", "x-amzn-sagemaker-inference-id"]) {
      const value = header(req, name);
      if (value !== undefined) forwarded[name] = value;
    }
    const target = header(req, "x-amzn-sagemaker-target-model");
    let answer: ContainerAnswer;
    if (target === undefined) {
      answer = await callContainer("/invocations", { method: "POST", headers: forwarded, body });
    } else {
      if (target.length > 1024 || target.startsWith("/") || target.split("/").includes("..")) {
        throw validationError(`TargetModel '${target}' is not a valid relative path.`);
      }
      // SageMaker's model_name is opaque to the container; the TargetModel travels as a header.
      const modelName = createHash("sha256").update(target).digest("hex").slice(0, 32);
      const headers = { ...forwarded, "x-amzn-sagemaker-target-model": target };
      await ensureLoaded(target, modelName);
      answer = await callContainer(`/models/${modelName}/invoke`, { method: "POST", headers, body });
      if (answer.status === 404) {
        loaded.delete(modelName); // the container lost it (restart): load again, once
        await ensureLoaded(target, modelName);
        answer = await callContainer(`/models/${modelName}/invoke`, { method: "POST", headers, body });
      }
    }
    if (answer.status < 200 || answer.status > 299)
      throw modelError(answer.status, answer.body.toString("utf8"));
    const headers: Record<string, string> = {
      "Content-Type": answer.headers.get("content-type") ?? "application/octet-stream",
      "Content-Length": String(answer.body.length),
      "x-Amzn-Invoked-Production-Variant": VARIANT,
      "x-amzn-RequestId": randomUUID(),
    };
    const attributes = answer.headers.get("x-amzn-sagemaker-custom-attributes");
    if (attributes !== null) headers["X-Amzn-SageMaker-Custom-Attributes"] = attributes;
    res.writeHead(200, headers);
    res.end(answer.body);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? "/", "http://sagemaker").pathname;
    const match = /^\/endpoints\/([^/]+)\/invocations$/.exec(path);
    if (req.method !== "POST" || match === null) {
      req.resume();
      throw new SageMakerFault(404, "UnknownOperationException", {
        message: `no operation at ${req.method} ${path}`,
      });
    }
    await invoke(req, decodeURIComponent(match[1]!), res);
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      const fault =
        error instanceof SageMakerFault
          ? error
          : new SageMakerFault(500, "InternalFailure", { Message: "An internal failure occurred." });
      if (!(error instanceof SageMakerFault))
        options.log?.("sagemaker stand-in failed", { error: String(error) });
      const text = JSON.stringify(fault.body);
      if (res.headersSent) return void res.destroy();
      res.writeHead(fault.status, {
        "Content-Type": "application/json",
        "Content-Length": Buffer.byteLength(text),
        "x-amzn-ErrorType": fault.type,
        "x-amzn-RequestId": randomUUID(),
      });
      res.end(text);
    });
  });
  const host = options.host ?? "127.0.0.1";
  let port: number;
  try {
    port = await listen(server, options.port ?? 0, host, {
      service: "the SageMaker runtime stand-in",
      envVar: "MAAS_SAGEMAKER_PORT",
    });
  } catch (error) {
    s3.destroy();
    await container.close();
    throw error;
  }

  return {
    url: `http://${host}:${port}`,
    endpointName,
    modelPrefix,
    container,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      s3.destroy();
      await container.close();
    },
  };
}

function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

async function readPayload(req: IncomingMessage): Promise<Buffer> {
  const body = await readBody(req, MAX_PAYLOAD_BYTES);
  if (body === "too-large") {
    req.resume();
    throw validationError(`Request payload is larger than ${MAX_PAYLOAD_BYTES / 1024 / 1024} MB.`);
  }
  return body;
}
