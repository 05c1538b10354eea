import { createWriteStream } from "node:fs";
import { copyFile, mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import * as ort from "onnxruntime-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { stuckRuns } from "#aws/onnx/worker-session.ts";
import { createModelArchive } from "#aws/sagemaker/model-archive.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import { type BatcherOptions, DynamicBatcher, type RunModel } from "../../containers/gpu/batcher.ts";
import { loadGpuServerConfig } from "../../containers/gpu/config.ts";
import { InsufficientMemoryError, ModelCache } from "../../containers/gpu/model-cache.ts";
import { type GpuServer, startGpuServer } from "../../containers/gpu/server.ts";
import { buildMlpModel } from "../../models/mlp.ts";
import { ElemType, encodeModel, floatTensor } from "../../models/onnx-builder.ts";
import { buildFixedShapeModel } from "../../models/zoo.ts";
import { callerLoopModel, expandBombModel } from "../support/runaway-models.ts";

// --- the batcher alone, with a model stand-in that records every run ----------------------------

interface RecordedRun {
  readonly rows: number;
  readonly at: number;
}

/** y = 10 * x + row index within the run: a merged run that split rows wrongly would show. */
function recordingModel(
  runs: RecordedRun[],
  options: { failOn?: number; delayMs?: number; batchMajor?: boolean } = {},
): RunModel {
  return async (inputs, outputs) => {
    const x = inputs[0]!;
    const rows = x.dims[0]!;
    runs.push({ rows, at: performance.now() });
    await new Promise((wake) => setTimeout(wake, options.delayMs ?? 1));
    const data = x.data as Float32Array;
    if (options.failOn !== undefined && data.includes(options.failOn))
      throw new Error(`poisoned value ${options.failOn}`);
    const y = data.map((value) => value * 10);
    const dims = options.batchMajor === false ? [y.length] : [...x.dims];
    return outputs.map((name) => ({ name, type: "float32" as const, dims, data: y }));
  };
}

function batcher(run: RunModel, options: Partial<BatcherOptions> = {}): DynamicBatcher {
  return new DynamicBatcher(run, {
    maxBatchSize: 8,
    maxQueueDelayMs: 20,
    maxConcurrentBatches: 1,
    batchable: true,
    ...options,
  });
}

const rowsOf = (values: number[][]): NamedTensor => ({
  name: "x",
  type: "float32",
  dims: [values.length, values[0]!.length],
  data: Float32Array.from(values.flat()),
});

describe("DynamicBatcher", () => {
  it("runs concurrent compatible requests once and gives each request its own rows back", async () => {
    const runs: RecordedRun[] = [];
    const queue = batcher(recordingModel(runs));
    const requests = [
      [[1, 2]],
      [
        [3, 4],
        [5, 6],
      ],
      [[7, 8]],
    ];

    const results = await Promise.all(requests.map((rows) => queue.submit([rowsOf(rows)], ["y"])));

    expect(runs.map((run) => run.rows)).toEqual([4]);
    expect(results.map(([y]) => ({ dims: y!.dims, data: Array.from(y!.data as Float32Array) }))).toEqual([
      { dims: [1, 2], data: [10, 20] },
      { dims: [2, 2], data: [30, 40, 50, 60] },
      { dims: [1, 2], data: [70, 80] },
    ]);
    expect(queue.stats).toMatchObject({ requests: 3, runs: 1, mergedRuns: 1, largestRun: 4 });
  });

  it("does not merge requests whose shapes differ beyond the first dimension", async () => {
    const runs: RecordedRun[] = [];
    const queue = batcher(recordingModel(runs));

    const [narrow, wide, narrowToo] = await Promise.all([
      queue.submit([rowsOf([[1, 2]])], ["y"]),
      queue.submit([rowsOf([[1, 2, 3]])], ["y"]),
      queue.submit([rowsOf([[4, 5]])], ["y"]),
    ]);

    expect(runs.map((run) => run.rows).sort()).toEqual([1, 2]);
    expect(narrow![0]!.dims).toEqual([1, 2]);
    expect(Array.from(wide![0]!.data as Float32Array)).toEqual([10, 20, 30]);
    expect(Array.from(narrowToo![0]!.data as Float32Array)).toEqual([40, 50]);
  });

  it("does not merge requests that ask for different outputs", async () => {
    const runs: RecordedRun[] = [];
    const queue = batcher(recordingModel(runs));

    await Promise.all([queue.submit([rowsOf([[1, 2]])], ["y"]), queue.submit([rowsOf([[3, 4]])], ["z"])]);

    expect(runs).toHaveLength(2);
  });

  it("re-runs a failed batch request by request, so only the bad request fails", async () => {
    const runs: RecordedRun[] = [];
    const queue = batcher(recordingModel(runs, { failOn: 666 }));

    const settled = await Promise.allSettled([
      queue.submit([rowsOf([[1, 2]])], ["y"]),
      queue.submit([rowsOf([[666, 0]])], ["y"]),
      queue.submit([rowsOf([[3, 4]])], ["y"]),
    ]);

    expect(settled.map((result) => result.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(
      Array.from((settled[2] as PromiseFulfilledResult<NamedTensor[]>).value[0]!.data as Float32Array),
    ).toEqual([30, 40]);
    expect(String((settled[1] as PromiseRejectedResult).reason)).toContain("poisoned");
    expect(queue.stats.fallbacks).toBe(1);
    expect(runs.map((run) => run.rows)).toEqual([3, 1, 1, 1]);
  });

  it("never puts more than maxBatchSize rows in one run", async () => {
    const runs: RecordedRun[] = [];
    const queue = batcher(recordingModel(runs), { maxBatchSize: 4 });

    await Promise.all(Array.from({ length: 10 }, (_, i) => queue.submit([rowsOf([[i, i]])], ["y"])));

    expect(runs.map((run) => run.rows)).toEqual([4, 4, 2]);
  });

  it("runs a request larger than maxBatchSize alone rather than refusing it", async () => {
    const runs: RecordedRun[] = [];
    const queue = batcher(recordingModel(runs), { maxBatchSize: 2 });

    const [y] = await queue.submit([rowsOf([[1], [2], [3]])], ["y"]);

    expect(y!.dims).toEqual([3, 1]);
    expect(runs.map((run) => run.rows)).toEqual([3]);
  });

  it("holds a lone request for maxQueueDelayMs, and no longer", async () => {
    const runs: RecordedRun[] = [];
    const queue = batcher(recordingModel(runs), { maxQueueDelayMs: 40 });

    const submitted = performance.now();
    await queue.submit([rowsOf([[1, 2]])], ["y"]);

    const waited = runs[0]!.at - submitted;
    expect(waited).toBeGreaterThanOrEqual(38);
    expect(waited).toBeLessThan(2_000);
  });

  it("starts a run as soon as maxBatchSize rows are waiting, without waiting out the delay", async () => {
    const runs: RecordedRun[] = [];
    const queue = batcher(recordingModel(runs), { maxBatchSize: 4, maxQueueDelayMs: 60_000 });

    const submitted = performance.now();
    await Promise.all(Array.from({ length: 4 }, (_, i) => queue.submit([rowsOf([[i]])], ["y"])));

    expect(runs.map((run) => run.rows)).toEqual([4]);
    expect(runs[0]!.at - submitted).toBeLessThan(1_000);
  });

  it("queues behind a running batch and merges what arrived meanwhile", async () => {
    const runs: RecordedRun[] = [];
    const queue = batcher(recordingModel(runs, { delayMs: 300 }), { maxQueueDelayMs: 0 });

    const first = queue.submit([rowsOf([[1]])], ["y"]);
    await new Promise((wake) => setTimeout(wake, 5));
    const later = Array.from({ length: 5 }, (_, i) => queue.submit([rowsOf([[i]])], ["y"]));
    await Promise.all([first, ...later]);

    expect(runs.map((run) => run.rows)).toEqual([1, 5]);
  });

  it("runs every request alone with batching off (maxBatchSize 1), one at a time", async () => {
    const runs: RecordedRun[] = [];
    let running = 0;
    let most = 0;
    const model = recordingModel(runs);
    const queue = batcher(
      async (inputs, outputs) => {
        running += 1;
        most = Math.max(most, running);
        try {
          return await model(inputs, outputs);
        } finally {
          running -= 1;
        }
      },
      { maxBatchSize: 1 },
    );

    await Promise.all(Array.from({ length: 6 }, (_, i) => queue.submit([rowsOf([[i, i]])], ["y"])));

    expect(runs.map((run) => run.rows)).toEqual([1, 1, 1, 1, 1, 1]);
    expect(most).toBe(1);
  });

  it("does not merge for a model without a dynamic first dimension", async () => {
    const runs: RecordedRun[] = [];
    const queue = batcher(recordingModel(runs), { batchable: false });

    await Promise.all([queue.submit([rowsOf([[1, 2]])], ["y"]), queue.submit([rowsOf([[3, 4]])], ["y"])]);

    expect(runs.map((run) => run.rows)).toEqual([1, 1]);
  });

  it("falls back to single runs when an output is not batch-major", async () => {
    const runs: RecordedRun[] = [];
    const queue = batcher(recordingModel(runs, { batchMajor: false }));

    const results = await Promise.all([
      queue.submit([rowsOf([[1, 2]])], ["y"]),
      queue.submit([rowsOf([[3, 4]])], ["y"]),
    ]);

    expect(results.map(([y]) => Array.from(y!.data as Float32Array))).toEqual([
      [10, 20],
      [30, 40],
    ]);
    expect(queue.stats.fallbacks).toBe(1);
  });
});

// --- the model cache alone -----------------------------------------------------------------------

describe("ModelCache", () => {
  function cache(budgetBytes = 100) {
    const events: string[] = [];
    const models = new ModelCache<string>({
      budgetBytes,
      estimateBytes: async (path) => Number(path.split(":")[1]),
      load: async (key) => {
        events.push(`load ${key}`);
        await new Promise((wake) => setTimeout(wake, 5));
        return key;
      },
      unload: async (model) => {
        events.push(`unload ${model}`);
      },
    });
    return { models, events };
  }

  it("loads a model once for concurrent callers, even when finding its file takes a while", async () => {
    const { models, events } = cache();
    const slowPath = (ms: number) => () =>
      new Promise<string>((done) => setTimeout(() => done("file:10"), ms));

    await Promise.all([0, 1, 20, 40].map((ms) => models.use("a", slowPath(ms), async () => undefined)));

    expect(events).toEqual(["load a"]);
    expect(models.usedBytes).toBe(10);
  });

  it("unloads least recently used idle models to make room, never one in use", async () => {
    const { models, events } = cache(25);
    const path = (bytes: number) => async () => `file:${bytes}`;
    let release = () => {};
    const held = models.use("busy", path(10), () => new Promise<void>((done) => (release = done)));
    await new Promise((wake) => setTimeout(wake, 20));
    await models.use("idle", path(10), async () => undefined);

    await models.use("new", path(10), async () => undefined);

    expect(events).toEqual(["load busy", "load idle", "unload idle", "load new"]);
    expect(models.list().map((entry) => entry.key)).toEqual(["busy", "new"]);
    // 20 more bytes cannot fit beside the busy model even with every idle one gone: nothing is unloaded.
    await expect(models.use("big", path(20), async () => undefined)).rejects.toBeInstanceOf(
      InsufficientMemoryError,
    );
    expect(models.list().map((entry) => entry.key)).toEqual(["busy", "new"]);
    release();
    await held;
  });

  it("releases a model unloaded while in use only when its last call ends", async () => {
    const { models, events } = cache();
    let release = () => {};
    const held = models.use(
      "a",
      async () => "file:10",
      () => new Promise<void>((done) => (release = done)),
    );
    await new Promise((wake) => setTimeout(wake, 20));

    await models.unload("a");
    expect(events).toEqual(["load a"]);
    release();
    await held;

    expect(events).toEqual(["load a", "unload a"]);
  });
});

// --- the HTTP server with onnxruntime on CPU -------------------------------------------------------

/** out[i] = table[indices[i]]: an index beyond the table makes onnxruntime fail on that request. */
function gatherModel(): Uint8Array {
  return encodeModel({
    graphName: "lookup",
    inputs: [{ name: "indices", elemType: ElemType.INT64, dims: ["batch", 1] }],
    outputs: [{ name: "rows", elemType: ElemType.FLOAT, dims: ["batch", 1, 2] }],
    initializers: [
      floatTensor(
        "table",
        [4, 2],
        Float32Array.from({ length: 8 }, (_, i) => i),
      ),
    ],
    nodes: [
      { opType: "Gather", inputs: ["table", "indices"], outputs: ["rows"], attributes: { axis: { int: 0 } } },
    ],
  });
}

const MLP = buildMlpModel({ layers: [4, 16, 3], seed: 7 });

interface V2Output {
  name: string;
  datatype: string;
  shape: number[];
  data: number[];
}

let root: string;
let modelsDir: string;
const servers: GpuServer[] = [];

async function start(env: Record<string, string> = {}): Promise<GpuServer> {
  const server = await startGpuServer({
    config: loadGpuServerConfig({
      MAAS_PORT: "0",
      MAAS_HOST: "127.0.0.1",
      MAAS_MODEL_DIRS: `${modelsDir},${join(root, "single")}`,
      MAAS_SCRATCH_DIR: join(root, "scratch"),
      MAAS_EXECUTION_PROVIDERS: "cpu",
      MAAS_MAX_QUEUE_DELAY_MS: "20",
      MAAS_INTRA_OP_THREADS: "1",
      ...env,
    }),
    ort,
    log: () => undefined,
  });
  servers.push(server);
  return server;
}

/** Places a model where SageMaker's multi-model layout puts an extracted archive: <dir>/<stem>/model.onnx. */
async function placeModel(stem: string, bytes: Uint8Array): Promise<string> {
  const directory = join(modelsDir, stem);
  await mkdir(directory, { recursive: true });
  await writeFile(join(directory, "model.onnx"), bytes);
  return directory;
}

function inferBody(name: string, datatype: string, shape: number[], data: unknown[]): string {
  return JSON.stringify({ inputs: [{ name, datatype, shape, data }] });
}

async function invoke(server: GpuServer, target: string | undefined, body: string, path = "/invocations") {
  const response = await fetch(`${server.url}${path}`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      ...(target === undefined ? {} : { "X-Amzn-SageMaker-Target-Model": target }),
    },
    body,
  });
  return {
    status: response.status,
    json: (await response.json()) as { outputs: V2Output[]; error?: string },
  };
}

async function ping(server: GpuServer) {
  const response = await fetch(`${server.url}/ping`);
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

async function directRun(bytes: Uint8Array, x: number[][]): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(bytes);
  try {
    const tensor = new ort.Tensor("float32", Float32Array.from(x.flat()), [x.length, x[0]!.length]);
    const { output } = await session.run({ input: tensor });
    return output!.data as Float32Array;
  } finally {
    await session.release();
  }
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "maas-gpu-server-"));
  modelsDir = join(root, "models");
  await mkdir(modelsDir, { recursive: true });
  await placeModel("mlp", MLP);
  await placeModel("lookup", gatherModel());
  await placeModel("fixed", buildFixedShapeModel());
});

afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("GPU container server", () => {
  it("answers /ping with the execution provider it chose and why the others were passed over", async () => {
    const server = await start({ MAAS_EXECUTION_PROVIDERS: "cuda,cpu" });

    const { status, json } = await ping(server);

    expect(status).toBe(200);
    const probes = json.executionProviders as { name: string; available: boolean; error?: string }[];
    expect(probes.at(-1)).toEqual({ name: json.executionProvider, available: true });
    for (const probe of probes.slice(0, -1)) {
      expect(probe.available).toBe(false);
      expect(probe.error).toBeTruthy();
    }
    expect(json.batching).toEqual({ maxBatchSize: 32, maxQueueDelayMs: 20, maxConcurrentBatches: 1 });
  });

  it("loads a model only when a request first names it", async () => {
    const server = await start();
    expect((await ping(server)).json.models).toEqual([]);

    const { status, json } = await invoke(
      server,
      "mlp.tar.gz",
      inferBody("input", "FP32", [1, 4], [1, 2, 3, 4]),
    );

    expect(status).toBe(200);
    expect(Float32Array.from(json.outputs[0]!.data as number[])).toEqual(
      await directRun(MLP, [[1, 2, 3, 4]]),
    );
    const models = (await ping(server)).json.models as { key: string; batchable: boolean }[];
    expect(models.map((model) => model.key)).toEqual(["target:mlp.tar.gz"]);
    expect(models[0]!.batchable).toBe(true);
  });

  it("batches concurrent requests and returns each one exactly what a direct run gives", async () => {
    // A long delay with a batch limit of 12: the run starts when all 12 are in, however slow the machine.
    const server = await start({ MAAS_MAX_BATCH_SIZE: "12", MAAS_MAX_QUEUE_DELAY_MS: "10000" });
    const rows = Array.from({ length: 12 }, (_, i) => [i, -i, i / 2, 1]);

    const answers = await Promise.all(
      rows.map((row) => invoke(server, "mlp.tar.gz", inferBody("input", "FP32", [1, 4], row))),
    );

    const expected = await directRun(MLP, rows);
    answers.forEach((answer, i) => {
      expect(answer.status).toBe(200);
      expect(answer.json.outputs[0]!.shape).toEqual([1, 3]);
      const want = expected.slice(i * 3, i * 3 + 3);
      answer.json.outputs[0]!.data.forEach((value, j) => {
        expect(value).toBeCloseTo(want[j]!, 5);
      });
    });
    const [model] = server.models();
    expect(model!.stats).toMatchObject({ requests: 12, runs: 1, mergedRuns: 1, largestRun: 12 });
  });

  it("fails only the request whose input breaks the model when its batch-mates are fine", async () => {
    const server = await start({ MAAS_MAX_BATCH_SIZE: "4", MAAS_MAX_QUEUE_DELAY_MS: "10000" });
    const indices = [0, 3, 99, 1];

    const answers = await Promise.all(
      indices.map((index) => invoke(server, "lookup", inferBody("indices", "INT64", [1, 1], [index]))),
    );

    expect(answers.map((answer) => answer.status)).toEqual([200, 200, 400, 200]);
    expect(answers[0]!.json.outputs[0]!.data).toEqual([0, 1]);
    expect(answers[1]!.json.outputs[0]!.data).toEqual([6, 7]);
    expect(answers[3]!.json.outputs[0]!.data).toEqual([2, 3]);
    expect(answers[2]!.json.error).toMatch(/out of (data )?bounds|must be within/);
    expect(server.models()[0]!.stats).toMatchObject({ mergedRuns: 1, fallbacks: 1 });
  });

  it("does not merge requests for a model with a fixed first dimension", async () => {
    const server = await start();
    const body = inferBody("x", "FP32", [2, 3], [1, 2, 3, 4, 5, 6]);

    const answers = await Promise.all([invoke(server, "fixed", body), invoke(server, "fixed", body)]);

    expect(answers.map((answer) => answer.status)).toEqual([200, 200]);
    expect(answers[0]!.json.outputs[0]!.data).toEqual([2, 4, 6, 8, 10, 12]);
    expect(server.models()[0]).toMatchObject({ batchable: false, stats: { runs: 2, mergedRuns: 0 } });
  });

  it("unloads the least recently used model when the memory budget needs room", async () => {
    const sizes = await Promise.all(
      ["mlp", "lookup", "fixed"].map(async (stem) => (await stat(join(modelsDir, stem, "model.onnx"))).size),
    );
    const budget = sizes[0]! + sizes[1]! + Math.min(...sizes) - 1; // never all three
    const server = await start({ MAAS_MEMORY_BUDGET_BYTES: String(budget), MAAS_MODEL_MEMORY_FACTOR: "1" });

    await invoke(server, "mlp", inferBody("input", "FP32", [1, 4], [1, 2, 3, 4]));
    await invoke(server, "lookup", inferBody("indices", "INT64", [1, 1], [1]));
    await invoke(server, "mlp", inferBody("input", "FP32", [1, 4], [1, 2, 3, 4]));
    const third = await invoke(server, "fixed", inferBody("x", "FP32", [2, 3], [1, 2, 3, 4, 5, 6]));

    expect(third.status).toBe(200);
    expect(server.models().map((model) => model.key)).toEqual(["target:mlp", "target:fixed"]);
    const again = await invoke(server, "lookup", inferBody("indices", "INT64", [1, 1], [2]));
    expect(again.status).toBe(200);
    expect(server.models().map((model) => model.key)).toEqual(["target:fixed", "target:lookup"]);
  });

  it("answers 507 when a model cannot fit the memory budget at all", async () => {
    const server = await start({ MAAS_MEMORY_BUDGET_BYTES: "1000" });

    const { status } = await invoke(server, "mlp", inferBody("input", "FP32", [1, 4], [1, 2, 3, 4]));

    expect(status).toBe(507);
  });

  it("extracts a model archive found as is in the model directory and serves it", async () => {
    const archiveDir = join(root, "archives");
    await mkdir(archiveDir, { recursive: true });
    const modelPath = join(archiveDir, "source.onnx");
    await writeFile(modelPath, MLP);
    await pipeline(
      createModelArchive(modelPath, MLP.byteLength),
      createWriteStream(join(modelsDir, "c0ffee.tar.gz")),
    );
    const server = await start();

    const { status, json } = await invoke(
      server,
      "c0ffee.tar.gz",
      inferBody("input", "FP32", [1, 4], [4, 3, 2, 1]),
    );

    expect(status).toBe(200);
    expect(Float32Array.from(json.outputs[0]!.data as number[])).toEqual(
      await directRun(MLP, [[4, 3, 2, 1]]),
    );
  });

  it("reads the target from the custom attributes on a single-model endpoint", async () => {
    const server = await start();

    const response = await fetch(`${server.url}/invocations`, {
      method: "POST",
      headers: { "X-Amzn-SageMaker-Custom-Attributes": "trace=1;target-model=mlp" },
      body: inferBody("input", "FP32", [1, 4], [1, 1, 1, 1]),
    });

    expect(response.status).toBe(200);
  });

  it("serves the single model of /opt/ml/model when no target is named", async () => {
    await mkdir(join(root, "single"), { recursive: true });
    await copyFile(join(modelsDir, "mlp", "model.onnx"), join(root, "single", "model.onnx"));
    const server = await start({ MAAS_MODEL_DIRS: join(root, "single") });

    const { status } = await invoke(server, undefined, inferBody("input", "FP32", [1, 4], [1, 2, 3, 4]));

    expect(status).toBe(200);
  });

  it("keeps answering /ping during a run past its deadline, and answers that run 504", async () => {
    await placeModel("loop", callerLoopModel());
    const server = await start({ MAAS_INFERENCE_DEADLINE_MS: "1000" });
    const loopBody = (trips: number) =>
      JSON.stringify({
        inputs: [
          { name: "M", datatype: "INT64", shape: [], data: [trips] },
          { name: "x", datatype: "FP32", shape: [1], data: [3] },
        ],
      });
    expect((await invoke(server, "loop", loopBody(10))).status).toBe(200);

    // About 90 ms per 100 000 trips: seconds of work, cut at one second.
    const runaway = invoke(server, "loop", loopBody(3_000_000));
    await new Promise((wake) => setTimeout(wake, 200));
    const started = performance.now();
    const { status } = await ping(server);
    const pingMs = performance.now() - started;
    const answer = await runaway;

    expect(status).toBe(200);
    // Before, the run held the server's only thread: /ping waited seconds for it.
    expect(pingMs).toBeLessThan(500);
    expect(answer.status).toBe(504);
    expect(answer.json.error).toMatch(/ran past the request's deadline \(\d+ ms\)/);
    expect((await invoke(server, "loop", loopBody(10))).status).toBe(200);
    // Its thread ends with its trips: wait for it, so the test process can exit.
    await expect.poll(() => stuckRuns(), { timeout: 60_000, interval: 200 }).toBe(0);
  }, 90_000);

  it("answers 404 for an unknown target and for one that climbs out of the model directory", async () => {
    const server = await start();
    const body = inferBody("input", "FP32", [1, 4], [1, 2, 3, 4]);

    expect((await invoke(server, "nope.tar.gz", body)).status).toBe(404);
    expect((await invoke(server, "../models/mlp", body)).status).toBe(404);
  });

  it("answers 400 with a reason for a malformed request or wrong input names", async () => {
    const server = await start();

    const broken = await invoke(server, "mlp", "{");
    const wrongName = await invoke(server, "mlp", inferBody("features", "FP32", [1, 4], [1, 2, 3, 4]));

    expect(broken.status).toBe(400);
    expect(wrongName.status).toBe(400);
    expect(wrongName.json.error).toContain("missing input");
  });

  it("answers 413 and 400 without onnxruntime's source paths when a caller's shape input cannot be run", async () => {
    await placeModel("expand", expandBombModel());
    const server = await start();
    const expandTo = (shape: number[]) =>
      invoke(
        server,
        "expand",
        JSON.stringify({
          inputs: [
            { name: "x", datatype: "FP32", shape: [1, 1], data: [1] },
            { name: "shape", datatype: "INT64", shape: [2], data: shape },
          ],
        }),
      );

    const huge = await expandTo([100_000, 100_000]);
    const negative = await expandTo([-3, 1]);

    expect(huge.status).toBe(413);
    expect(huge.json.error).toMatch(/^the model rejected the inputs: .*Failed to allocate memory/);
    expect(negative.status).toBe(400);
    for (const error of [huge.json.error, negative.json.error]) {
      expect(error).not.toContain("/");
      expect(error).not.toContain(".cc:");
      expect(error).not.toContain("onnxruntime::");
    }
  });

  it("implements SageMaker's multi-model contract: load, 409 on reload, list, invoke, unload", async () => {
    const server = await start();
    const url = join(modelsDir, "mlp");
    const load = () =>
      fetch(`${server.url}/models`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model_name: "m1", url }),
      });

    expect((await load()).status).toBe(200);
    expect((await load()).status).toBe(409);
    expect(await (await fetch(`${server.url}/models`)).json()).toEqual({
      models: [{ modelName: "m1", modelUrl: url }],
    });
    expect(await (await fetch(`${server.url}/models/m1`)).json()).toEqual({ modelName: "m1", modelUrl: url });
    const invoked = await invoke(
      server,
      "whatever.tar.gz",
      inferBody("input", "FP32", [1, 4], [1, 2, 3, 4]),
      "/models/m1/invoke",
    );
    expect(invoked.status).toBe(200);
    expect(Float32Array.from(invoked.json.outputs[0]!.data as number[])).toEqual(
      await directRun(MLP, [[1, 2, 3, 4]]),
    );
    expect((await fetch(`${server.url}/models/m1`, { method: "DELETE" })).status).toBe(200);
    expect(server.models()).toEqual([]);
    expect((await fetch(`${server.url}/models/m1`)).status).toBe(404);
    expect((await invoke(server, undefined, "{}", "/models/m1/invoke")).status).toBe(404);
  });

  it("answers 507 to a multi-model load that does not fit, keeping SageMaker's models loaded", async () => {
    const size = (await stat(join(modelsDir, "mlp", "model.onnx"))).size;
    const server = await start({
      MAAS_MEMORY_BUDGET_BYTES: String(size + 100),
      MAAS_MODEL_MEMORY_FACTOR: "1",
    });
    const load = (name: string, stem: string) =>
      fetch(`${server.url}/models`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model_name: name, url: join(modelsDir, stem) }),
      });

    expect((await load("first", "mlp")).status).toBe(200);
    expect((await load("second", "mlp")).status).toBe(507);
    expect(server.models().map((model) => model.key)).toEqual(["mme:first"]);
  });
});
