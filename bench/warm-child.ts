/**
 * One side of the warm comparison, in a process that hosts only the inference function, as a Lambda
 * environment does: the bench's own process runs the emulators, queue pollers and optimizer, whose
 * timers and sockets would otherwise share this event loop. Bundled by bench/inference.ts like the
 * function's asset and given the environment the function would have.
 *   warm-child.mjs <models as JSON: [{ name, input, dims, iterations }]> raw|handler
 * raw: session.run on this thread, from the file the handler serves with the handler's options.
 * handler: API Gateway event in, response out (no HTTP; the run in the session's worker thread).
 * The bench alternates processes of both sides. Prints one JSON line: per model, p50 and p99 in ms.
 */
import { Logger } from "@aws-lambda-powertools/logger";
import * as ort from "onnxruntime-node";
import { EmfMetricsSink } from "#aws/metrics/emf-sink.ts";
import { createOrtSession } from "#aws/onnx/runner.ts";
import { XRayRequestTracing } from "#aws/tracing/xray.ts";
import { InferenceStatistics } from "#core/metrics/statistics.ts";
import { servingArtifact } from "#core/model.ts";
import { isServable } from "#core/registry/registry.ts";
import { loadInferenceConfig } from "#lambdas/inference/config.ts";
import { createInferenceHandler } from "#lambdas/inference/handler.ts";
import { createInferenceParts, defaultClients } from "#lambdas/inference/service.ts";
import { lambdaContext } from "../local/gateway.ts";
import { inferEvent } from "./events.ts";
import { median, muteStdout, percentile } from "./stats.ts";

export interface WarmModel {
  readonly name: string;
  readonly input: string;
  readonly dims: readonly number[];
  readonly iterations: number;
}

/**
 * `handler`: wired as Lambda runs it (EMF metrics, statistics), and X-Ray tracing with every request
 * sampled (Lambda samples 1 a second and 5% of the rest); `unmetered`: the same without them.
 */
export type WarmSide = "raw" | "handler" | "unmetered";

export interface WarmResult {
  readonly name: string;
  readonly side: WarmSide;
  readonly p50: number;
  readonly p99: number;
  /**
   * The metered handler only: per pair of adjacent blocks, its block's median less the unmetered
   * block's (ms), so drift over the run cancels out; and the same between pairs of unmetered blocks
   * (`controlDiffs`), the noise floor of that estimate.
   */
  readonly pairedDiffs?: readonly number[];
  readonly controlDiffs?: readonly number[];
}

/** `_X_AMZN_TRACE_ID` as Lambda sets it per invocation: sampled on every `every`-th read (one per request). */
function sampledOneIn(every: number): Record<string, string | undefined> {
  let reads = 0;
  return {
    get _X_AMZN_TRACE_ID() {
      reads++;
      return `Root=1-6755c0de-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=${reads % every === 0 ? 1 : 0}`;
    },
  };
}

/** Requests per block while the metered and unmetered handlers alternate. */
const BLOCK = 100;
const METERING = process.env.BENCH_METERING ?? "emf,stats,trace";

/** Deterministic, varied inputs: constant inputs can flatter some kernels. */
function inputValues(count: number): number[] {
  return Array.from({ length: count }, (_, i) => Math.sin(i * 0.37) * 2);
}

/**
 * One side of the comparison for one model, alone in this process: raw `session.run` on this thread
 * (the file the handler serves, the handler's session options), or the handler. Sessions in one
 * process share its cores: an idle session's spinning threads would tax the other side's runs.
 */
async function measure(model: WarmModel, side: "raw" | "handler"): Promise<WarmResult[]> {
  const { service, registry, artifacts } = parts;
  const count = model.dims.reduce((a, b) => a * b, 1);
  const values = inputValues(count);
  const event = inferEvent(model.name, {
    inputs: [{ name: model.input, shape: model.dims, datatype: "FP32", data: values }],
  });
  const record = await registry.getVersion(model.name, 1);
  if (record === undefined || !isServable(record)) throw new Error(`${model.name} is not servable`);
  const silence = muteStdout();
  try {
    if (side === "raw") {
      const times: number[] = [];
      // What the handler serves: the optimizer's selected variant, or the upload itself.
      const session = await createOrtSession(await artifacts.load(servingArtifact(record)));
      const feeds = { [model.input]: new ort.Tensor("float32", Float32Array.from(values), [...model.dims]) };
      for (let i = 0; i < Math.min(50, model.iterations); i++) await session.run(feeds);
      for (let i = 0; i < model.iterations; i++) {
        const start = performance.now();
        await session.run(feeds);
        times.push(performance.now() - start);
      }
      await session.release();
      return [{ name: model.name, side, p50: median(times), p99: percentile(times, 99) }];
    }
    const handlers = {
      handler: createInferenceHandler(service, logger, {
        ...(METERING.includes("emf")
          ? { metrics: new EmfMetricsSink({ functionName: "maas-inference-bench" }) }
          : {}),
        ...(METERING.includes("stats") ? { statistics: new InferenceStatistics() } : {}),
        // Sent to a port nobody reads: UDP to the daemon costs the function the same.
        ...(METERING.includes("trace")
          ? { tracing: new XRayRequestTracing({ daemonAddress: "127.0.0.1:2000", env: sampledOneIn(20) }) }
          : {}),
      }),
      unmetered: createInferenceHandler(service, logger, {}),
    };
    const times = { handler: [] as number[], unmetered: [] as number[] };
    const blockMedians = { handler: [] as number[], unmetered: [] as number[] };
    for (const handler of Object.values(handlers)) {
      for (let i = 0; i < Math.min(50, model.iterations) + 1; i++) {
        const result = await handler(event, lambdaContext("warmup", Date.now()));
        if (result.statusCode !== 200)
          throw new Error(`handler answered ${result.statusCode}: ${result.body}`);
        await new Promise((logged) => setImmediate(logged));
      }
    }
    for (let done = 0; done < model.iterations; done += BLOCK) {
      // AB, then BA: neither always runs first.
      const order =
        (done / BLOCK) % 2 === 0 ? (["handler", "unmetered"] as const) : (["unmetered", "handler"] as const);
      for (const which of order) {
        const block: number[] = [];
        for (let i = 0; i < Math.min(BLOCK, model.iterations - done); i++) {
          // Lambda hands the handler its context: building it is not the handler's time.
          const context = lambdaContext("bench", Date.now());
          const start = performance.now();
          const result = await handlers[which](event, context);
          block.push(performance.now() - start);
          // The log line, metric and trace are written after the answer: outside the timing, as in
          // Lambda, where they run before the environment's next invocation.
          await new Promise((logged) => setImmediate(logged));
          if (result.statusCode !== 200)
            throw new Error(`handler answered ${result.statusCode}: ${result.body}`);
        }
        times[which].push(...block);
        blockMedians[which].push(median(block));
      }
    }
    await parts.sessions.close();
    const pairs = Math.min(blockMedians.handler.length, blockMedians.unmetered.length);
    const pairedDiffs = Array.from(
      { length: pairs },
      (_, i) => (blockMedians.handler[i] as number) - (blockMedians.unmetered[i] as number),
    );
    const controlDiffs = Array.from(
      { length: Math.floor(blockMedians.unmetered.length / 2) },
      (_, i) => (blockMedians.unmetered[2 * i + 1] as number) - (blockMedians.unmetered[2 * i] as number),
    );
    return (["handler", "unmetered"] as const).map((which) => ({
      ...(which === "handler" ? { pairedDiffs, controlDiffs } : {}),
      name: model.name,
      side: which,
      p50: median(times[which]),
      p99: percentile(times[which], 99),
    }));
  } finally {
    silence();
  }
}

// Handler logs go nowhere, but are still formatted and written, as in Lambda.
const logger = new Logger({ serviceName: "maas-inference", logLevel: "INFO" });
const parts = createInferenceParts(loadInferenceConfig(process.env), defaultClients());
const results: WarmResult[] = [];
const side = process.argv[3];
if (side !== "raw" && side !== "handler") throw new Error("usage: warm-child.mjs <models JSON> raw|handler");
for (const model of JSON.parse(process.argv[2] ?? "[]") as WarmModel[])
  results.push(...(await measure(model, side)));
process.stdout.write(`${JSON.stringify(results)}\n`);
