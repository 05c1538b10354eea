/**
 * `npm run bench:gpu-server`: the GPU container server with dynamic batching against the same server
 * with batching off (MAAS_MAX_BATCH_SIZE=1), measured in one run, alternating windows so both see the
 * same machine state. Closed loop: BENCH_CONCURRENCY clients (32) each send one-row requests back to
 * back to POST /invocations of a large generated MLP, over HTTP, through the compiled-from-source
 * server (containers/gpu/main.ts) in a child process.
 *
 * Defaults to the CPU provider (the done-when: batched throughput >= 3x unbatched at
 * concurrency 32 on CPU). On a GPU machine: BENCH_PROVIDERS=cuda (and bench/gpu-reference.py for the
 * PyTorch limit with the same weights, BENCH_SAVE_MODEL=<path> keeps the ONNX file for it).
 *
 *   BENCH_WIDTH=4096 BENCH_LAYERS=8   the MLP: LAYERS dense layers of WIDTH x WIDTH (8 x 4096^2 = 537 MB)
 *   BENCH_CONCURRENCY=32 BENCH_SECONDS=8 BENCH_ROUNDS=3 BENCH_MAX_BATCH=32 BENCH_QUEUE_DELAY_MS=2
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { availableParallelism, cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { mulberry32 } from "#core/tensor/seeded-random.ts";
import { buildMlpModel } from "../models/mlp.ts";
import { formatMs, percentile, printTable } from "./stats.ts";

const WIDTH = Number(process.env.BENCH_WIDTH ?? 4096);
const LAYERS = Number(process.env.BENCH_LAYERS ?? 8);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const MAX_BATCH = Number(process.env.BENCH_MAX_BATCH ?? 32);
const QUEUE_DELAY_MS = Number(process.env.BENCH_QUEUE_DELAY_MS ?? 2);
const PROVIDERS = process.env.BENCH_PROVIDERS ?? "cpu";
const TARGET = "mlp";
const SERVER_ENTRY = resolve(import.meta.dirname, "../containers/gpu/main.ts");

interface Server {
  readonly label: string;
  readonly url: string;
  readonly child: ChildProcess;
}

interface Window {
  readonly requests: number;
  readonly seconds: number;
  readonly latencies: number[];
}

async function startServer(label: string, modelDir: string, env: Record<string, string>): Promise<Server> {
  const child = spawn(process.execPath, ["--import", "tsx", SERVER_ENTRY], {
    env: {
      ...process.env,
      MAAS_PORT: "0",
      MAAS_HOST: "127.0.0.1",
      MAAS_MODEL_DIRS: modelDir,
      MAAS_EXECUTION_PROVIDERS: PROVIDERS,
      ...env,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const port = await new Promise<number>((done, fail) => {
    child.once("exit", (code) => fail(new Error(`${label} server exited with ${code}`)));
    createInterface({ input: child.stdout! }).on("line", (line) => {
      try {
        const event = JSON.parse(line) as { message?: string; port?: number };
        if (event.message === "listening" && event.port) done(event.port);
      } catch {
        // not a log line of ours
      }
    });
  });
  return { label, url: `http://127.0.0.1:${port}`, child };
}

function requestBodies(count: number): string[] {
  const random = mulberry32(42);
  return Array.from({ length: count }, () =>
    JSON.stringify({
      inputs: [
        {
          name: "input",
          datatype: "FP32",
          shape: [1, WIDTH],
          data: Array.from({ length: WIDTH }, () => random() * 2 - 1),
        },
      ],
    }),
  );
}

async function invoke(server: Server, body: string): Promise<number[]> {
  const response = await fetch(`${server.url}/invocations`, {
    method: "POST",
    headers: { "content-type": "application/json", "X-Amzn-SageMaker-Target-Model": TARGET },
    body,
  });
  const text = await response.text();
  if (response.status !== 200)
    throw new Error(`${server.label}: HTTP ${response.status}: ${text.slice(0, 300)}`);
  return (JSON.parse(text) as { outputs: { data: number[] }[] }).outputs[0]!.data;
}

/** CONCURRENCY clients, each sending its next request as soon as the last one answers. */
async function measure(server: Server, bodies: readonly string[], seconds: number): Promise<Window> {
  const latencies: number[] = [];
  const started = performance.now();
  const deadline = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async (_, client) => {
      let n = client;
      while (performance.now() < deadline) {
        const sent = performance.now();
        await invoke(server, bodies[n % bodies.length]!);
        latencies.push(performance.now() - sent);
        n += CONCURRENCY;
      }
    }),
  );
  return { requests: latencies.length, seconds: (performance.now() - started) / 1000, latencies };
}

async function modelStats(server: Server): Promise<{ runs: number; requests: number }> {
  const ping = (await (await fetch(`${server.url}/ping`)).json()) as {
    models: { stats: { runs: number; requests: number } }[];
  };
  return ping.models[0]?.stats ?? { runs: 0, requests: 0 };
}

async function main(): Promise<void> {
  const layers = Array.from({ length: LAYERS + 1 }, () => WIDTH);
  console.log(
    `GPU container server bench: MLP ${LAYERS} x ${WIDTH}x${WIDTH}, concurrency ${CONCURRENCY}, provider ${PROVIDERS}, ` +
      `${ROUNDS} rounds of ${SECONDS} s per server, ${availableParallelism()} CPUs (${cpus()[0]?.model.trim()})`,
  );
  const started = performance.now();
  const model = buildMlpModel({ layers, seed: 1, name: "bench_mlp" });
  const root = await mkdtemp(join(tmpdir(), "maas-bench-gpu-"));
  const servers: Server[] = [];
  try {
    await mkdir(join(root, TARGET));
    await writeFile(join(root, TARGET, "model.onnx"), model);
    if (process.env.BENCH_SAVE_MODEL) await writeFile(process.env.BENCH_SAVE_MODEL, model);
    console.log(
      `model: ${(model.byteLength / 1e6).toFixed(0)} MB, built in ${((performance.now() - started) / 1000).toFixed(1)} s`,
    );

    const delay = String(QUEUE_DELAY_MS);
    const unbatched = await startServer("unbatched", root, {
      MAAS_MAX_BATCH_SIZE: "1",
      MAAS_MAX_QUEUE_DELAY_MS: delay,
    });
    servers.push(unbatched);
    const batched = await startServer("batched", root, {
      MAAS_MAX_BATCH_SIZE: String(MAX_BATCH),
      MAAS_MAX_QUEUE_DELAY_MS: delay,
    });
    servers.push(batched);

    const bodies = requestBodies(64);
    // Lazy load and warm-up, and the same answer from both.
    const [a, b] = [await invoke(unbatched, bodies[0]!), await invoke(batched, bodies[0]!)];
    const worst = a.reduce((max, value, i) => Math.max(max, Math.abs(value - b[i]!)), 0);
    if (worst > 1e-3) throw new Error(`batched and unbatched servers disagree by ${worst}`);
    for (const server of servers) await measure(server, bodies, 1);

    const windows = new Map<string, Window[]>(servers.map((server) => [server.label, []]));
    const before = new Map(
      await Promise.all(servers.map(async (s) => [s.label, await modelStats(s)] as const)),
    );
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? [unbatched, batched] : [batched, unbatched];
      for (const server of order) windows.get(server.label)!.push(await measure(server, bodies, SECONDS));
    }

    const summary = await Promise.all(
      servers.map(async (server) => {
        const measured = windows.get(server.label)!;
        const requests = measured.reduce((sum, window) => sum + window.requests, 0);
        const seconds = measured.reduce((sum, window) => sum + window.seconds, 0);
        const latencies = measured.flatMap((window) => window.latencies);
        const stats = await modelStats(server);
        const start = before.get(server.label)!;
        const rowsPerRun = (stats.requests - start.requests) / Math.max(1, stats.runs - start.runs);
        return { server, throughput: requests / seconds, requests, latencies, rowsPerRun };
      }),
    );
    const baseline = summary[0]!.throughput;
    printTable(
      ["server", "max batch", "requests", "req/s", "p50 ms", "p99 ms", "rows/run", "vs unbatched"],
      summary.map((row) => [
        row.server.label,
        row.server === batched ? String(MAX_BATCH) : "1",
        String(row.requests),
        row.throughput.toFixed(1),
        formatMs(percentile(row.latencies, 50)),
        formatMs(percentile(row.latencies, 99)),
        row.rowsPerRun.toFixed(1),
        `${(row.throughput / baseline).toFixed(2)}x`,
      ]),
    );
    const ratio = summary[1]!.throughput / baseline;
    console.log(
      `batched / unbatched throughput: ${ratio.toFixed(2)}x (done when >= 3x at concurrency ${CONCURRENCY})`,
    );
    if (PROVIDERS === "cpu") {
      console.log("PyTorch on CUDA (the reference limit) needs a GPU: see bench/gpu-reference.py.");
    }
  } finally {
    for (const server of servers) server.child.kill("SIGTERM");
    await rm(root, { recursive: true, force: true });
  }
}

await main();
