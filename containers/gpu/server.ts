/**
 * The SageMaker GPU serving container: an HTTP server for the SageMaker hosting contract with V2
 * (Open Inference Protocol) JSON bodies.
 *
 *   GET  /ping                       200 + the execution provider, batching settings, loaded models
 *   POST /invocations                infer; X-Amzn-SageMaker-Target-Model (or the custom attribute
 *                                    `target-model=...`) names the model, else the single model
 *   POST /models                     multi-model contract: load {model_name, url}; 409 if loaded,
 *                                    507 if it does not fit the memory budget
 *   GET  /models[/<name>]            list / describe loaded models
 *   DELETE /models/<name>            unload
 *   POST /models/<name>/invoke       infer on a model loaded through POST /models
 *
 * Models come from SageMaker's layouts under MAAS_MODEL_DIRS (and, with MAAS_MODEL_S3_URI, from the
 * model prefix in S3), are loaded on first use, and unloaded least recently used first under
 * MAAS_MEMORY_BUDGET_BYTES. Requests for one model are batched (batcher.ts). Settings: config.ts.
 *
 * Every infer request and batch run is counted, as the inference function counts its own (names.ts):
 *
 *   GET /metrics                     on MAAS_METRICS_PORT: Prometheus text, Triton's names
 *   GET /v2/models[/<m>[/versions/<v>]]/stats   there too: Triton's statistics extension
 *
 * and, with MAAS_CLOUDWATCH_METRICS=1, in CloudWatch (cloudwatch-metrics.ts). A model is labelled by
 * its target without the archive suffix (the artifact's digest for the inference function's requests),
 * the multi-model API's model_name, or "model" for the single model; version 1, as SageMaker has none.
 */
import { createWriteStream } from "node:fs";
import { stat } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { PutMetricDataCommandInput } from "@aws-sdk/client-cloudwatch";
import {
  GetObjectCommand,
  NoSuchKey,
  S3Client,
  type S3ClientConfig,
  S3ServiceException,
} from "@aws-sdk/client-s3";
import type * as Ort from "onnxruntime-node";
import { z } from "zod";
import type { SessionDescription } from "#aws/onnx/session-protocol.ts";
import { WorkerSession } from "#aws/onnx/worker-session.ts";
import {
  InvalidRequestError,
  MaasError,
  ModelNotFoundError,
  PayloadTooLargeError,
  RouteNotFoundError,
  redactInternals,
} from "#core/errors.ts";
import { type InferenceMetric, newInferenceMetric, settleOutcome } from "#core/metrics/inference-metric.ts";
import { PROMETHEUS_CONTENT_TYPE } from "#core/metrics/prometheus.ts";
import { type BatchExecution, InferenceStatistics, type StatisticsScope } from "#core/metrics/statistics.ts";
import { ortRunError } from "#core/tensor/ort-tensors.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import {
  BINARY_CONTENT_TYPE,
  binaryOutputsOf,
  type EncodedResponse,
  encodeInferResponse,
  HEADER_LENGTH_HEADER,
  headerLengthFromContentType,
  type InferBody,
  parseHeaderLength,
  parseInferBody,
  SAGEMAKER_BINARY_CONTENT_TYPE,
} from "#core/v2/binary-data.ts";
import { parseJsonBody } from "#core/v2/parse.ts";
import { matchV2Route, type V2Route } from "#core/v2/routes.ts";
import { decodeInput } from "#core/v2/tensor-codec.ts";
import { describeZodError } from "#core/v2/wire.ts";
import { type BatcherStats, DynamicBatcher } from "./batcher.ts";
import { CloudWatchMetrics, type MetricDataSender } from "./cloudwatch-metrics.ts";
import { type GpuServerConfig, listenPort, metricsPort } from "./config.ts";
import {
  chooseExecutionProvider,
  defaultMemoryBudget,
  type ProviderChoice,
  providerOption,
} from "./execution-provider.ts";
import { ModelCache } from "./model-cache.ts";
import { type FetchArchive, findModelFile, ModelLocator, targetStem } from "./model-locator.ts";
import { readBody } from "./read-body.ts";

export interface GpuServerOptions {
  readonly config: GpuServerConfig;
  /** onnxruntime-node; imported on start when not given. */
  readonly ort?: typeof Ort;
  /** The S3 client for MAAS_MODEL_S3_URI; @default the environment's region and credentials */
  readonly s3?: S3ClientConfig;
  /** One line per notable event; @default JSON lines on stdout */
  readonly log?: (message: string, fields?: Record<string, unknown>) => void;
  /** Where CloudWatch metrics go with MAAS_CLOUDWATCH_METRICS=1; @default a CloudWatchClient for the environment's region */
  readonly cloudWatch?: MetricDataSender;
}

export interface ServedModelInfo {
  readonly key: string;
  readonly path: string;
  readonly bytes: number;
  readonly pinned: boolean;
  readonly batchable: boolean;
  readonly stats: BatcherStats;
}

export interface GpuServer {
  readonly url: string;
  readonly port: number;
  /** The metrics port's base URL: `/metrics` and the statistics extension. */
  readonly metricsUrl: string;
  readonly provider: ProviderChoice;
  /** Models loaded now, least recently used first. */
  models(): ServedModelInfo[];
  close(): Promise<void>;
}

/** How metrics name a served model. */
interface ModelLabel {
  readonly model: string;
  readonly version: number;
}

/** A loaded model: its session, what it takes and gives, and its batcher. */
interface ServedModel {
  readonly session: WorkerSession;
  /** Its metrics' model and version, worked out once when it loads. */
  readonly label: ModelLabel;
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly batchable: boolean;
  readonly batcher: DynamicBatcher;
}

const BACKEND = "sagemaker" as const;
/** The model of a single-model endpoint when no target is named (the name its responses carry too). */
const SINGLE_MODEL = "model";
const TARGET_MODEL_HEADER = "x-amzn-sagemaker-target-model";
const CUSTOM_ATTRIBUTES_HEADER = "x-amzn-sagemaker-custom-attributes";
const MME_PAGE_SIZE = 1000;

const loadRequestSchema = z.object({ model_name: z.string().min(1).max(1024), url: z.string().min(1) });

/** Dynamic first dimension on every input and output: stacking requests along it is safe. */
function isBatchable(session: SessionDescription): boolean {
  const metadata = [...session.inputMetadata, ...session.outputMetadata];
  return (
    metadata.length > 0 &&
    metadata.every((value) => {
      if (!value.isTensor || value.shape.length === 0) return false;
      const first = value.shape[0];
      return typeof first === "string" || (typeof first === "number" && first < 0);
    })
  );
}

/** The cache key of a target (or of the single model), and of a model loaded through the multi-model API. */
const targetKey = (target: string | undefined) => `target:${target ?? ""}`;
const registeredKey = (name: string) => `mme:${name}`;

/** The label of the model a cache key names (see the file's first comment). */
function labelOf(key: string): ModelLabel {
  const name = key.slice(key.indexOf(":") + 1);
  if (key.startsWith("mme:")) return { model: name, version: 1 };
  return { model: name === "" ? SINGLE_MODEL : targetStem(name), version: 1 };
}

function defaultLog(message: string, fields: Record<string, unknown> = {}): void {
  console.log(JSON.stringify({ time: new Date().toISOString(), message, ...fields }));
}

export async function startGpuServer(options: GpuServerOptions): Promise<GpuServer> {
  const { config } = options;
  const log = options.log ?? defaultLog;
  const ort = options.ort ?? (await import("onnxruntime-node"));
  const provider = await chooseExecutionProvider(ort, config.MAAS_EXECUTION_PROVIDERS);
  const budgetBytes = config.MAAS_MEMORY_BUDGET_BYTES ?? (await defaultMemoryBudget(provider.name));
  log("execution provider chosen", { provider: provider.name, probes: provider.probes, budgetBytes });
  const statistics = new InferenceStatistics({ batched: true });
  const cloudWatch =
    config.MAAS_CLOUDWATCH_METRICS === "1"
      ? new CloudWatchMetrics({ sender: options.cloudWatch ?? (await cloudWatchSender()), log })
      : undefined;
  /** After the response, off its path; a metric must never fail serving. */
  const record = (metric: Readonly<InferenceMetric>) => {
    try {
      statistics.record(metric);
      cloudWatch?.record(metric);
    } catch (error) {
      log("metric not recorded", { error: String(error) });
    }
  };
  const recordExecution = (execution: BatchExecution) => {
    try {
      statistics.recordExecution(execution);
      cloudWatch?.recordExecution(execution, BACKEND);
    } catch (error) {
      log("metric not recorded", { error: String(error) });
    }
  };

  const sessionOptions: Ort.InferenceSession.SessionOptions = {
    executionProviders: [providerOption(provider.name)],
    graphOptimizationLevel: "all",
    intraOpNumThreads: config.MAAS_INTRA_OP_THREADS,
    interOpNumThreads: 1,
    executionMode: "sequential",
    logSeverityLevel: 3,
    extra: { session: { intra_op: { allow_spinning: config.MAAS_INTRA_OP_SPINNING } } },
  };

  const cache = new ModelCache<ServedModel>({
    budgetBytes,
    estimateBytes: async (path) => Math.ceil((await stat(path)).size * config.MAAS_MODEL_MEMORY_FACTOR),
    load: async (key, path) => {
      const started = performance.now();
      // In a worker thread of its own: a run never holds up /ping or other models' requests.
      const session = await WorkerSession.open(path, sessionOptions);
      const batchable = isBatchable(session);
      const run = async (inputs: readonly NamedTensor[], outputs: readonly string[]) => {
        try {
          return await session.run(inputs, outputs, Date.now() + config.MAAS_INFERENCE_DEADLINE_MS);
        } finally {
          // Past its deadline the session went with its worker: the next request loads the model again.
          if (session.lost) void cache.unload(key);
        }
      };
      const label = labelOf(key);
      const batcher = new DynamicBatcher(run, {
        maxBatchSize: config.MAAS_MAX_BATCH_SIZE,
        maxQueueDelayMs: config.MAAS_MAX_QUEUE_DELAY_MS,
        maxConcurrentBatches: config.MAAS_MAX_CONCURRENT_BATCHES,
        batchable,
        onExecution: (execution) => recordExecution({ ...label, ...execution }),
      });
      log("model loaded", { key, path, batchable, ms: Math.round(performance.now() - started) });
      return {
        session,
        label,
        inputNames: session.inputNames,
        outputNames: session.outputNames,
        batchable,
        batcher,
      };
    },
    unload: async (model) => {
      await model.session.release();
    },
  });
  const s3 = config.MAAS_MODEL_S3_URI === undefined ? undefined : new S3Client(options.s3 ?? {});
  const locator = new ModelLocator(
    config.MAAS_MODEL_DIRS.split(",")
      .map((dir) => dir.trim())
      .filter(Boolean),
    config.MAAS_SCRATCH_DIR,
    s3 === undefined ? undefined : s3ArchiveFetcher(s3, config.MAAS_MODEL_S3_URI!, log),
  );
  /** Models loaded through the multi-model API: SageMaker's model_name -> its directory. */
  const registered = new Map<string, { url: string; path: string }>();

  /** A V2 infer request's response: JSON, or with the binary outputs it asks for. Fills in `metric` as it goes. */
  async function infer(
    key: string,
    locate: () => Promise<string>,
    modelName: string,
    body: InferBody,
    metric: InferenceMetric,
  ): Promise<EncodedResponse> {
    // A caller's mistake counts under a model loaded here; under a target found nowhere, by reason only.
    if (cache.has(key)) Object.assign(metric, labelOf(key));
    let started = performance.now();
    const request = parseInferBody(body);
    const binaryOutputs = binaryOutputsOf(request);
    const inputs = request.inputs.map(decodeInput);
    metric.inputDecodeUs = (performance.now() - started) * 1000;
    metric.batchSize = request.inputs[0]?.shape[0] ?? 1;
    let located: number | undefined;
    const locateTimed = async () => {
      const locating = performance.now();
      try {
        return await locate();
      } finally {
        located = performance.now();
        metric.artifactFetchUs = (located - locating) * 1000;
      }
    };
    const outputs = await cache.use(key, locateTimed, async (model) => {
      Object.assign(metric, model.label);
      // Only a request that waited for the model to load: the rest find it loaded and never locate it.
      if (located !== undefined) metric.sessionCreateUs = (performance.now() - located) * 1000;
      const missing = model.inputNames.filter((name) => !inputs.some((input) => input.name === name));
      const unknown = inputs
        .filter((input) => !model.inputNames.includes(input.name))
        .map((input) => input.name);
      if (missing.length > 0 || unknown.length > 0) {
        throw new InvalidRequestError(
          `the model takes inputs ${model.inputNames.join(", ")}` +
            (missing.length ? `; missing ${missing.join(", ")}` : "") +
            (unknown.length ? `; unknown ${unknown.join(", ")}` : ""),
        );
      }
      const names = request.outputs?.map((output) => output.name) ?? model.outputNames;
      const absent = names.filter((name) => !model.outputNames.includes(name));
      if (absent.length > 0) throw new InvalidRequestError(`the model has no output ${absent.join(", ")}`);
      return model.batcher.submit(inputs, names, metric);
    });
    started = performance.now();
    const answer = encodeInferResponse(
      { model_name: modelName, ...(request.id === undefined ? {} : { id: request.id }), outputs },
      binaryOutputs,
    );
    metric.outputEncodeUs = (performance.now() - started) * 1000;
    return answer;
  }

  async function route(req: IncomingMessage, res: ServerResponse, metric: InferenceMetric): Promise<void> {
    const url = new URL(req.url ?? "/", "http://container");
    const method = req.method ?? "GET";
    const path = url.pathname;

    if (path === "/ping" && method === "GET") {
      return send(res, 200, {
        status: "healthy",
        executionProvider: provider.name,
        executionProviders: provider.probes,
        batching: {
          maxBatchSize: config.MAAS_MAX_BATCH_SIZE,
          maxQueueDelayMs: config.MAAS_MAX_QUEUE_DELAY_MS,
          maxConcurrentBatches: config.MAAS_MAX_CONCURRENT_BATCHES,
        },
        memory: { budgetBytes: cache.budgetBytes, usedBytes: cache.usedBytes },
        models: models(),
      });
    }
    if (path === "/invocations" && method === "POST") {
      metric.backend = BACKEND;
      const target = targetOf(req);
      const body = await readInferBody(req, config.MAAS_MAX_BODY_BYTES, metric);
      const key = targetKey(target);
      const answer = await infer(key, () => locator.locate(target), target ?? SINGLE_MODEL, body, metric);
      metric.responseBytes = sendInferResponse(req, res, answer);
      return;
    }
    if (path === "/models" && method === "GET") {
      const start = Number(url.searchParams.get("next_page_token") ?? "0") || 0;
      const all = [...registered.entries()];
      const page = all.slice(start, start + MME_PAGE_SIZE);
      return send(res, 200, {
        models: page.map(([name, { url: modelUrl }]) => ({ modelName: name, modelUrl })),
        ...(start + MME_PAGE_SIZE < all.length ? { nextPageToken: String(start + MME_PAGE_SIZE) } : {}),
      });
    }
    if (path === "/models" && method === "POST") {
      const parsed = loadRequestSchema.safeParse(parseJsonBody(await readText(req, 64 * 1024)));
      if (!parsed.success) throw new InvalidRequestError(describeZodError(parsed.error));
      const { model_name: name, url: modelUrl } = parsed.data;
      if (registered.has(name))
        throw new MaasError(409, "model_already_loaded", `model '${name}' is already loaded`);
      const modelPath = await findModelFile(modelUrl);
      await cache.load(registeredKey(name), modelPath);
      registered.set(name, { url: modelUrl, path: modelPath });
      return send(res, 200, { status: `model '${name}' loaded` });
    }
    const match = /^\/models\/([^/]+)(\/invoke)?$/.exec(path);
    if (match) {
      const name = decodeURIComponent(match[1]!);
      const model = registered.get(name);
      if (model === undefined) throw new ModelNotFoundError(`model '${name}' is not loaded`);
      if (match[2] && method === "POST") {
        metric.backend = BACKEND;
        const body = await readInferBody(req, config.MAAS_MAX_BODY_BYTES, metric);
        const answer = await infer(registeredKey(name), async () => model.path, name, body, metric);
        metric.responseBytes = sendInferResponse(req, res, answer);
        return;
      }
      if (!match[2] && method === "GET") return send(res, 200, { modelName: name, modelUrl: model.url });
      if (!match[2] && method === "DELETE") {
        registered.delete(name);
        await cache.unload(registeredKey(name));
        return send(res, 200, { status: `model '${name}' unloaded` });
      }
    }
    throw new RouteNotFoundError(method, path);
  }

  function models(): ServedModelInfo[] {
    return cache.list().map(({ model, key, path, bytes, pinned }) => ({
      key,
      path,
      bytes,
      pinned,
      batchable: model.batchable,
      stats: { ...model.batcher.stats },
    }));
  }

  /** The models the statistics extension answers for: those counted, and those loaded but not asked yet. */
  function statisticsScope(route: Extract<V2Route, { kind: "stats" }>): StatisticsScope {
    const known = new Map(statistics.recorded().map(({ name, versions }) => [name, versions]));
    for (const { key } of cache.list()) {
      const { model, version } = labelOf(key);
      if (!known.has(model)) known.set(model, [version]);
    }
    if (route.model === undefined) return Array.from(known, ([name, versions]) => ({ name, versions }));
    const versions = known.get(route.model) ?? [];
    const chosen =
      route.version === undefined ? versions : versions.filter((v) => String(v) === route.version);
    if (chosen.length === 0) {
      throw new ModelNotFoundError(
        `model '${route.model}'${route.version === undefined ? "" : ` version ${route.version}`} is not served here`,
      );
    }
    return [{ name: route.model, versions: chosen }];
  }

  function routeMetrics(req: IncomingMessage, res: ServerResponse): void {
    const method = req.method ?? "GET";
    const path = new URL(req.url ?? "/", "http://container").pathname;
    if (path === "/metrics" && method === "GET") {
      const text = statistics.prometheus();
      res.writeHead(200, {
        "Content-Type": PROMETHEUS_CONTENT_TYPE,
        "Content-Length": Buffer.byteLength(text),
      });
      res.end(text);
      return;
    }
    const route = matchV2Route(method, path);
    if (route.kind !== "stats") throw new RouteNotFoundError(method, path);
    send(res, 200, statistics.modelStats(statisticsScope(route)));
  }

  let servedOne = false;
  const server: Server = createServer((req, res) => {
    const started = performance.now();
    const metric = newInferenceMetric();
    let failedWith: number | undefined;
    route(req, res, metric)
      .catch((error: unknown) => {
        const { status, message } = describeError(error);
        failedWith = status;
        // The full text (onnxruntime's source frames included) goes to the log only, never the body.
        if (status >= 500 && status !== 507)
          log("request failed", { url: req.url, status, error: String(error) });
        else if (!(error instanceof MaasError))
          log("inputs refused by the model", { url: req.url, status, error: String(error) });
        if (!res.headersSent)
          metric.responseBytes = sendText(res, status, JSON.stringify({ error: message }));
        else res.destroy();
      })
      .finally(() => {
        if (metric.backend === undefined) return;
        metric.totalUs = (performance.now() - started) * 1000;
        settleOutcome(metric, failedWith ?? res.statusCode);
        metric.coldStart = !servedOne;
        metric.timestamp = Date.now();
        servedOne = true;
        record(metric);
      });
  });
  server.keepAliveTimeout = 65_000;
  const metricsServer = createServer((req, res) => {
    try {
      routeMetrics(req, res);
    } catch (error) {
      const { status, message } = describeError(error);
      send(res, status, { error: message });
    }
  });
  const [port, boundMetricsPort] = await Promise.all([
    listen(server, listenPort(config), config.MAAS_HOST),
    listen(metricsServer, metricsPort(config), config.MAAS_HOST),
  ]).catch((error: unknown) => {
    // One port taken: the other must not keep the process (or a test's worker) alive.
    server.close();
    metricsServer.close();
    throw error;
  });
  const host = config.MAAS_HOST === "0.0.0.0" ? "127.0.0.1" : config.MAAS_HOST;
  log("listening", { port, metricsPort: boundMetricsPort });

  return {
    url: `http://${host}:${port}`,
    port,
    metricsUrl: `http://${host}:${boundMetricsPort}`,
    provider,
    models,
    async close() {
      await Promise.all(
        [server, metricsServer].map(
          (listening) =>
            new Promise<void>((resolve) => {
              listening.close(() => resolve());
              listening.closeAllConnections();
            }),
        ),
      );
      await cache.close();
      await cloudWatch?.close();
      s3?.destroy();
    },
  };
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** PutMetricData through the SDK, loaded only where CloudWatch metrics are on. */
async function cloudWatchSender(): Promise<MetricDataSender> {
  const { CloudWatchClient, PutMetricDataCommand } = await import("@aws-sdk/client-cloudwatch");
  const client = new CloudWatchClient({});
  return {
    putMetricData: (input: PutMetricDataCommandInput) => client.send(new PutMetricDataCommand(input)),
  };
}

/** Downloads `<prefix><target>` from the model prefix in S3, as SageMaker does for multi-model endpoints. */
function s3ArchiveFetcher(
  s3: S3Client,
  uri: string,
  log: NonNullable<GpuServerOptions["log"]>,
): FetchArchive {
  const [, bucket = "", prefix = ""] = /^s3:\/\/([^/]+)\/?(.*)$/.exec(uri) ?? [];
  const base = prefix === "" || prefix.endsWith("/") ? prefix : `${prefix}/`;
  return async (target, file) => {
    const started = performance.now();
    let body: Readable;
    try {
      const object = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: `${base}${target}` }));
      if (!(object.Body instanceof Readable)) throw new Error(`S3 returned no body for ${base}${target}`);
      body = object.Body;
    } catch (error) {
      if (
        error instanceof NoSuchKey ||
        // Without s3:ListBucket beyond the prefix, S3 answers 403 for a missing key.
        (error instanceof S3ServiceException && [403, 404].includes(error.$metadata.httpStatusCode ?? 0))
      ) {
        return false;
      }
      throw error;
    }
    await pipeline(body, createWriteStream(file));
    log("model archive downloaded", { target, ms: Math.round(performance.now() - started) });
    return true;
  };
}

/** The target model: the multi-model header, or `target-model=` in the custom attributes. */
function targetOf(req: IncomingMessage): string | undefined {
  const header = req.headers[TARGET_MODEL_HEADER];
  if (typeof header === "string" && header !== "") return header;
  const attributes = req.headers[CUSTOM_ATTRIBUTES_HEADER];
  if (typeof attributes !== "string") return undefined;
  for (const pair of attributes.split(/[;,]/)) {
    const [key, value] = pair.split("=", 2).map((part) => part.trim());
    if (key === "target-model" && value) return value;
  }
  return undefined;
}

/**
 * A MaasError (the container's own included: 404 for a missing model, 507 for no room) says its status;
 * anything else is onnxruntime's, classified by ortRunError. Every message is redacted before a body.
 */
function describeError(error: unknown): { status: number; message: string } {
  const mapped = error instanceof MaasError ? error : ortRunError(error);
  return { status: mapped.status, message: redactInternals(mapped.message) };
}

function send(res: ServerResponse, status: number, body: unknown): void {
  sendText(res, status, JSON.stringify(body));
}

/** Sends a JSON text; returns its bytes. */
function sendText(res: ServerResponse, status: number, text: string): number {
  const bytes = Buffer.byteLength(text);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": bytes });
  res.end(text);
  return bytes;
}

/** The body; over `limit` bytes the request is refused with a 413 without buffering the rest. */
async function readBytes(req: IncomingMessage, limit: number): Promise<Buffer> {
  const body = await readBody(req, limit);
  if (body === "too-large") {
    req.resume();
    throw new PayloadTooLargeError(`request body is over ${limit} bytes`);
  }
  return body;
}

async function readText(req: IncomingMessage, limit: number): Promise<string> {
  return (await readBytes(req, limit)).toString("utf8");
}

/**
 * An infer body: JSON, or a JSON header and binary tensor data, its length given by
 * `Inference-Header-Content-Length` (Triton's clients) or the content type's `json-header-size` (SageMaker's).
 */
async function readInferBody(
  req: IncomingMessage,
  limit: number,
  metric: InferenceMetric,
): Promise<InferBody> {
  const bytes = await readBytes(req, limit);
  metric.requestBytes = bytes.length;
  const declared =
    headerOf(req, HEADER_LENGTH_HEADER) ?? headerLengthFromContentType(headerOf(req, "content-type"));
  if (declared === undefined) return bytes.toString("utf8");
  return { bytes, headerLength: parseHeaderLength(declared, bytes.length) };
}

function headerOf(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/**
 * Binary outputs go back as the caller sent: SageMaker's content type with the header size, or Triton's
 * header. Returns the body's bytes.
 */
function sendInferResponse(req: IncomingMessage, res: ServerResponse, answer: EncodedResponse): number {
  if ("json" in answer) return sendText(res, 200, answer.json);
  const sageMakerStyle = [headerOf(req, "content-type"), headerOf(req, "accept")].some((value) =>
    value?.toLowerCase().startsWith(SAGEMAKER_BINARY_CONTENT_TYPE),
  );
  res.writeHead(200, {
    "Content-Type": sageMakerStyle
      ? `${SAGEMAKER_BINARY_CONTENT_TYPE};json-header-size=${answer.headerLength}`
      : BINARY_CONTENT_TYPE,
    [HEADER_LENGTH_HEADER]: String(answer.headerLength),
    "Content-Length": answer.bytes.length,
  });
  res.end(answer.bytes);
  return answer.bytes.length;
}
