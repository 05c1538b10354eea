/**
 * `npm run bench`: the serving path against raw onnxruntime-node, measured in one run.
 *   warm: the inference handler (API Gateway event in, response out; no HTTP) vs session.run alone,
 *         for the demo model and a ~50 MB MLP, interleaved so both see the same machine state.
 *   cold: a new process per sample: import + registry read + download from the local S3 emulator +
 *         sha256 + session create + first inference, vs import + create from a local file + first run.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Logger } from "@aws-lambda-powertools/logger";
import type { APIGatewayProxyEvent } from "aws-lambda";
import { type BuildOptions, build } from "esbuild";
import * as ort from "onnxruntime-node";
import { sessionOptions } from "../lambdas/aws/onnx-runner.ts";
import { createInferenceHandler } from "../lambdas/inference/handler.ts";
import { lambdaContext } from "../local/gateway.ts";
import { LOCAL_BUCKET, LOCAL_TABLE, type LocalStack, startLocalStack } from "../local/stack.ts";
import { buildIrisModel } from "../models/iris.ts";
import { buildMlpModel, MLP_50MB_LAYERS } from "../models/mlp.ts";
import { formatMs, median, percentile, printTable } from "./stats.ts";

const run = promisify(execFile);
const WARM_ITERATIONS = Number(process.env.BENCH_WARM_ITERATIONS ?? 2000);
const MLP_ITERATIONS = Number(process.env.BENCH_MLP_ITERATIONS ?? 200);
const COLD_SAMPLES = Number(process.env.BENCH_COLD_SAMPLES ?? 5);

interface BenchModel {
  readonly name: string;
  readonly bytes: Uint8Array;
  readonly input: string;
  readonly dims: readonly number[];
  readonly iterations: number;
}

function inferEvent(
  model: string,
  input: string,
  dims: readonly number[],
  values: readonly number[],
): APIGatewayProxyEvent {
  return {
    httpMethod: "POST",
    path: `/v2/models/${model}/infer`,
    resource: "/{proxy+}",
    headers: { "content-type": "application/json" },
    multiValueHeaders: {},
    queryStringParameters: null,
    multiValueQueryStringParameters: null,
    pathParameters: { proxy: `v2/models/${model}/infer` },
    stageVariables: null,
    isBase64Encoded: false,
    body: JSON.stringify({ inputs: [{ name: input, shape: dims, datatype: "FP32", data: values }] }),
    requestContext: {} as APIGatewayProxyEvent["requestContext"],
  };
}

/** Deterministic, varied inputs: constant inputs can flatter some kernels. */
function inputValues(count: number): number[] {
  return Array.from({ length: count }, (_, i) => Math.sin(i * 0.37) * 2);
}

async function main() {
  const dataDir = await mkdtemp(join(tmpdir(), "maas-bench-"));
  // Handler logs go nowhere, but are still formatted and written, as in Lambda.
  const logger = new Logger({ serviceName: "maas-inference", logLevel: "INFO" });
  const stack = await startLocalStack({
    dataDir,
    port: 0,
    s3Port: 0,
    apiKey: "bench-key-1",
    adminKey: "bench-admin-1",
    logLevel: "SILENT",
  });
  try {
    const models: BenchModel[] = [
      { name: "iris", bytes: buildIrisModel(), input: "features", dims: [1, 4], iterations: WARM_ITERATIONS },
      {
        name: "mlp50",
        bytes: buildMlpModel({ layers: [...MLP_50MB_LAYERS] }),
        input: "input",
        dims: [1, MLP_50MB_LAYERS[0] as number],
        iterations: MLP_ITERATIONS,
      },
    ];
    // Pinned to the original (raw runs the original), and measured only once the optimizer is idle:
    // its variant benchmarks would otherwise share the two cores with ours.
    await stack.publish("mlp50", 1, models[1]!.bytes, { manifest: { pinOriginal: true } });
    await optimizerIdle(stack, ["iris", "mlp50"]);
    const handler = createInferenceHandler(stack.inference.service, logger);

    console.log(`warm path: p50 over interleaved iterations (${ort.env.versions.node} onnxruntime-node)\n`);
    const warmRows: string[][] = [];
    for (const model of models) {
      const count = model.dims.reduce((a, b) => a * b, 1);
      const values = inputValues(count);
      const event = inferEvent(model.name, model.input, model.dims, values);
      // The very session the handler uses, from its pool: both sides share threads, memory and state.
      const { sessions, registry } = stack.inference;
      const record = await registry.getVersion(model.name, 1);
      if (record?.artifact === undefined) throw new Error(`${model.name} is not registered`);
      await handler(event, lambdaContext("load", Date.now()));
      const session = await sessions.use(
        record.artifact.sha256,
        record.artifact.bytes,
        notLoaded,
        async (s) => s,
      );
      const feeds = { [model.input]: new ort.Tensor("float32", Float32Array.from(values), [...model.dims]) };
      const rawTimes: number[] = [];
      const handlerTimes: number[] = [];
      const silence = muteStdout();
      try {
        for (let i = 0; i < Math.min(50, model.iterations); i++) {
          await session.run(feeds);
          await handler(event, lambdaContext("warmup", Date.now()));
          await new Promise((logged) => setImmediate(logged));
        }
        for (let i = 0; i < model.iterations; i++) {
          let start = performance.now();
          await session.run(feeds);
          rawTimes.push(performance.now() - start);
          // Lambda hands the handler its context: building it is not the handler's time.
          const context = lambdaContext("bench", Date.now());
          start = performance.now();
          const result = await handler(event, context);
          handlerTimes.push(performance.now() - start);
          // The handler writes its log line after answering: let it finish outside both timings.
          await new Promise((logged) => setImmediate(logged));
          if (result.statusCode !== 200)
            throw new Error(`handler answered ${result.statusCode}: ${result.body}`);
        }
      } finally {
        silence();
      }
      const raw50 = median(rawTimes);
      const handler50 = median(handlerTimes);
      warmRows.push([
        `${model.name} (${(model.bytes.byteLength / 1e6).toFixed(1)} MB)`,
        formatMs(raw50),
        formatMs(handler50),
        formatMs(handler50 - raw50),
        (handler50 / raw50).toFixed(3),
        formatMs(percentile(handlerTimes, 99)),
      ]);
    }
    printTable(["model", "raw p50 ms", "handler p50 ms", "overhead ms", "ratio", "handler p99 ms"], warmRows);

    console.log(`\ncold path: median of ${COLD_SAMPLES} new processes each, 50 MB MLP\n`);
    const mlp = await stack.registry.getVersion("mlp50", 1);
    if (mlp?.artifact === undefined) throw new Error("mlp50 did not register");
    await coldBench(
      stack.emulators.s3Endpoint,
      stack.emulators.dynamoEndpoint,
      dataDir,
      models[1]!,
      mlp.artifact.key,
    );
  } finally {
    await stack.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** Waits until each model's version 1 has been through the optimizer. */
async function optimizerIdle(stack: LocalStack, names: readonly string[]): Promise<void> {
  const deadline = Date.now() + 300_000;
  for (const name of names) {
    while ((await stack.registry.getVersionConsistent(name, 1))?.optimizedAt === undefined) {
      if (Date.now() > deadline) throw new Error(`${name} was not optimized in time`);
      await new Promise((wake) => setTimeout(wake, 100));
    }
  }
}

const notLoaded = () => Promise.reject(new Error("the handler should have loaded this session"));

/** Replaces stdout's writer while measuring, so handler logs cost their formatting but do not flood the table. */
function muteStdout(): () => void {
  const write = process.stdout.write;
  process.stdout.write = (() => true) as typeof process.stdout.write;
  return () => {
    process.stdout.write = write;
  };
}

async function coldBench(
  s3Endpoint: string,
  dynamoEndpoint: string,
  dataDir: string,
  model: BenchModel,
  artifactKey: string,
) {
  // Bundled like the Lambda asset (onnxruntime-node and the SageMaker client external; see
  // lib/maas-function.ts), inside node_modules so that they resolve.
  const outDir = join(process.cwd(), "node_modules", ".cache", "maas-bench");
  const common = {
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node22",
    external: ["onnxruntime-node", "@aws-sdk/client-sagemaker-runtime"] as string[],
    banner: {
      js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);",
    },
    minify: true,
    // As deployed: source maps, which the function loads (NODE_OPTIONS=--enable-source-maps).
    sourcemap: true,
    sourcesContent: false,
    logLevel: "error",
  } satisfies BuildOptions;
  await build({
    ...common,
    entryPoints: ["lambdas/inference/handler.ts"],
    outfile: join(outDir, "handler.mjs"),
  });
  await build({ ...common, entryPoints: ["bench/cold-child.ts"], outfile: join(outDir, "cold-child.mjs") });
  const modelPath = join(dataDir, "mlp50.onnx");
  await writeFile(modelPath, model.bytes);
  const dim = String(model.dims[1]);

  const baseEnv = {
    ...process.env,
    AWS_REGION: "us-east-1",
    AWS_ACCESS_KEY_ID: "local",
    AWS_SECRET_ACCESS_KEY: "local",
    AWS_ENDPOINT_URL_S3: s3Endpoint,
    AWS_ENDPOINT_URL_DYNAMODB: dynamoEndpoint,
    MAAS_REGISTRY_TABLE: LOCAL_TABLE,
    POWERTOOLS_LOG_LEVEL: "WARN",
  };
  const child = async (args: string[], env: NodeJS.ProcessEnv = baseEnv) => {
    const { stdout, stderr } = await run(process.execPath, [join(outDir, "cold-child.mjs"), ...args], {
      env,
      maxBuffer: 1 << 20,
    });
    if (process.env.BENCH_VERBOSE) process.stderr.write(stderr);
    return JSON.parse(stdout.trim().split("\n").at(-1) ?? "{}") as Record<string, number>;
  };

  const raw: Record<string, number>[] = [];
  const served: Record<string, number>[] = [];
  const transfers: Record<string, number>[] = [];
  for (let i = 0; i < COLD_SAMPLES; i++) {
    raw.push(await child(["raw", modelPath, dim, JSON.stringify(sessionOptions())]));
    const artifactDir = await mkdtemp(join(tmpdir(), "maas-cold-"));
    served.push(
      await child(["handler", join(outDir, "handler.mjs"), model.name, dim], {
        ...baseEnv,
        MAAS_ARTIFACT_DIR: artifactDir,
        NODE_OPTIONS: "--enable-source-maps",
      }),
    );
    await rm(artifactDir, { recursive: true, force: true });
    transfers.push(await child(["transfer", LOCAL_BUCKET, artifactKey]));
  }
  const pick = (rows: Record<string, number>[], key: string) =>
    median(rows.map((row) => row[key] ?? Number.NaN));
  const rawTotal = pick(raw, "totalMs");
  const servedTotal = pick(served, "totalMs");
  const transfer = pick(transfers, "transferMs");
  printTable(
    ["path", "import ms", "first request ms", "total ms", "ratio"],
    [
      [
        "raw: import, create from file, run",
        formatMs(pick(raw, "importMs")),
        formatMs(pick(raw, "createMs") + pick(raw, "runMs")),
        formatMs(rawTotal),
        "1.000",
      ],
      [
        "handler: import, registry, S3, sha256, create, run",
        formatMs(pick(served, "importMs")),
        formatMs(pick(served, "firstRequestMs")),
        formatMs(servedTotal),
        (servedTotal / rawTotal).toFixed(3),
      ],
    ],
  );
  console.log(
    `\nemulator transfer of the ${(model.bytes.byteLength / 1e6).toFixed(1)} MB artifact alone (the handler's signed GET, in a new process, to nowhere): ${formatMs(transfer)} ms`,
  );
  // Raw reads a local file: the handler's own cost is what it adds beyond moving the bytes.
  console.log(
    `handler without the emulator's transfer: ${formatMs(servedTotal - transfer)} ms, ${((servedTotal - transfer) / rawTotal).toFixed(3)} × raw`,
  );
}

await main();
