/**
 * `npm run bench`: the serving path against raw onnxruntime-node, measured in one run.
 *   warm: the inference handler (API Gateway event in, response out; no HTTP) vs session.run alone,
 *         with its metrics (EMF, statistics) and X-Ray tracing (1 request in 20 sampled) as Lambda runs
 *         it, and without them (`unmetered`, in the same process on the same session, alternating;
 *         BENCH_METERING=emf|stats|trace, comma-separated, meters with those alone),
 *         for the demo model and a ~50 MB MLP, each side alone in a process that hosts only the
 *         function (bench/warm-child.ts), in alternating pairs of processes.
 *   cold: a new process per sample: import + registry read + download from the local S3 emulator +
 *         sha256 + session create + first inference, vs import + create from a local file + first run.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { type BuildOptions, build } from "esbuild";
import * as ort from "onnxruntime-node";
import { sessionOptions } from "#aws/onnx/runner.ts";
import { SESSION_WORKER_BUNDLE, SESSION_WORKER_SOURCE } from "#aws/onnx/session-protocol.ts";
import { LAZY_MODULES } from "../lib/lazy-modules.ts";
import { LOCAL_BUCKET, LOCAL_TABLE } from "../local/stack.ts";
import { buildIrisModel } from "../models/iris.ts";
import { buildMlpModel, MLP_50MB_LAYERS } from "../models/mlp.ts";
import { optimizerIdle, startBenchStack } from "./bench-stack.ts";
import { formatMs, median, percentile, printTable } from "./stats.ts";
import type { WarmModel, WarmResult, WarmSide } from "./warm-child.ts";

const run = promisify(execFile);
const WARM_ITERATIONS = Number(process.env.BENCH_WARM_ITERATIONS ?? 2000);
const MLP_ITERATIONS = Number(process.env.BENCH_MLP_ITERATIONS ?? 1000);
const COLD_SAMPLES = Number(process.env.BENCH_COLD_SAMPLES ?? 9);
const WARM_PAIRS = Number(process.env.BENCH_WARM_PAIRS ?? 3);

interface BenchModel extends WarmModel {
  readonly bytes: Uint8Array;
}

async function main() {
  const { stack, dataDir, close } = await startBenchStack("serving");
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
    const bundles = await buildBundles();
    const env = functionEnv(stack.emulators.s3Endpoint, stack.emulators.dynamoEndpoint);

    console.log(
      `warm path: p50 of each side alone in its process, median of ${WARM_PAIRS} alternating pairs of processes (${ort.env.versions.node} onnxruntime-node)\n`,
    );
    const artifactDir = await mkdtemp(join(tmpdir(), "maas-warm-"));
    const sides: Record<WarmSide, WarmResult[][]> = { raw: [], handler: [], unmetered: [] };
    for (let pair = 0; pair < WARM_PAIRS; pair++) {
      // AB, then BA: neither process side always runs first. A handler process reports the handler
      // metered and unmetered, alternating in blocks on one session.
      const order = pair % 2 === 0 ? (["raw", "handler"] as const) : (["handler", "raw"] as const);
      for (const side of order) {
        const results = await runChild<WarmResult[]>(
          bundles.warmChild,
          [JSON.stringify(models.map(({ bytes, ...model }) => model)), side],
          { ...env, MAAS_ARTIFACT_DIR: artifactDir },
        );
        for (const which of ["raw", "handler", "unmetered"] as const) {
          const found = results.filter((result) => result.side === which);
          if (found.length > 0) sides[which].push(found);
        }
      }
    }
    await rm(artifactDir, { recursive: true, force: true });
    const of = (side: WarmSide, index: number, figure: "p50" | "p99") =>
      median(sides[side].map((run) => run[index]?.[figure] ?? Number.NaN));
    printTable(
      ["model", "raw p50 ms", "handler p50 ms", "overhead ms", "ratio", "handler p99 ms"],
      models.map((model, i) => {
        const raw50 = of("raw", i, "p50");
        const handler50 = of("handler", i, "p50");
        return [
          `${model.name} (${(model.bytes.byteLength / 1e6).toFixed(1)} MB)`,
          formatMs(raw50),
          formatMs(handler50),
          formatMs(handler50 - raw50),
          (handler50 / raw50).toFixed(3),
          formatMs(of("handler", i, "p99")),
        ];
      }),
    );
    console.log(
      "\nmetrics and tracing on (EMF lines, statistics, X-Ray sampling 1 request in 20) against off, same build, same process and session, alternating blocks of 100 requests; on - off is the median over adjacent pairs of blocks of the difference of their medians, and the control the same between unmetered blocks a pair apart (the noise floor):\n",
    );
    const diffs = (index: number, field: "pairedDiffs" | "controlDiffs") =>
      sides.handler.flatMap((run) => run[index]?.[field] ?? []).map((ms) => ms * 1000);
    const quartiles = (values: readonly number[]) =>
      `${percentile(values, 25).toFixed(1)} to ${percentile(values, 75).toFixed(1)}`;
    printTable(
      [
        "model",
        "overhead off ms",
        "on - off µs",
        "its IQR µs",
        "control µs",
        "its IQR µs",
        "on - off / overhead off",
        "pairs",
      ],
      models.map((model, i) => {
        const off = of("unmetered", i, "p50") - of("raw", i, "p50");
        const paired = diffs(i, "pairedDiffs");
        const control = diffs(i, "controlDiffs");
        return [
          model.name,
          formatMs(off),
          median(paired).toFixed(1),
          quartiles(paired),
          median(control).toFixed(1),
          quartiles(control),
          `${((median(paired) / 1000 / off) * 100).toFixed(1)}%`,
          String(paired.length),
        ];
      }),
    );

    console.log(`\ncold path: median of ${COLD_SAMPLES} new processes each, 50 MB MLP\n`);
    const mlp = await stack.registry.getVersion("mlp50", 1);
    if (mlp?.artifact === undefined) throw new Error("mlp50 did not register");
    await coldBench(bundles, env, dataDir, models[1]!, mlp.artifact.key);
  } finally {
    await close();
  }
}

interface Bundles {
  readonly handler: string;
  readonly coldChild: string;
  readonly warmChild: string;
}

/**
 * The handler and the bench's children, bundled like the Lambda asset (onnxruntime-node, sharp and the
 * lazily loaded packages external; see lib/maas-function.ts), inside node_modules so that those resolve.
 */
async function buildBundles(): Promise<Bundles> {
  const outDir = join(process.cwd(), "node_modules", ".cache", "maas-bench");
  const common = {
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node22",
    // sharp as MaasFunction.withSharp ships it: beside the handler, not inside (its JavaScript, with
    // semver and its colour library, is 128 KB the asset's cold start does not parse).
    external: ["onnxruntime-node", "sharp", ...LAZY_MODULES] as string[],
    banner: {
      js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);",
    },
    minify: true,
    // As lib/maas-function.ts bundles: the ESM builds of dependencies, which tree-shake (smithy's CJS
    // signer pulls in 130 KB of @smithy/core that its ESM build does not).
    mainFields: ["module", "main"],
    // As deployed: a source map beside the bundle, read only when an error is logged (no
    // --enable-source-maps; see lambdas/aws/lambda/stack-map.ts).
    sourcemap: true,
    sourcesContent: false,
    logLevel: "error",
  } satisfies BuildOptions;
  const bundles = {
    handler: join(outDir, "handler.mjs"),
    coldChild: join(outDir, "cold-child.mjs"),
    warmChild: join(outDir, "warm-child.mjs"),
  };
  await build({ ...common, entryPoints: ["lambdas/inference/handler.ts"], outfile: bundles.handler });
  // Beside the handler, as the asset carries it: each session's worker thread runs it.
  await build({
    ...common,
    entryPoints: [fileURLToPath(SESSION_WORKER_SOURCE)],
    outfile: join(outDir, SESSION_WORKER_BUNDLE),
  });
  await build({ ...common, entryPoints: ["bench/cold-child.ts"], outfile: bundles.coldChild });
  await build({ ...common, entryPoints: ["bench/warm-child.ts"], outfile: bundles.warmChild });
  return bundles;
}

/** The environment the function gets, pointed at the emulators. */
function functionEnv(s3Endpoint: string, dynamoEndpoint: string): NodeJS.ProcessEnv {
  return {
    ...process.env,
    AWS_REGION: "us-east-1",
    AWS_ACCESS_KEY_ID: "local",
    AWS_SECRET_ACCESS_KEY: "local",
    AWS_ENDPOINT_URL_S3: s3Endpoint,
    AWS_ENDPOINT_URL_DYNAMODB: dynamoEndpoint,
    MAAS_REGISTRY_TABLE: LOCAL_TABLE,
    POWERTOOLS_LOG_LEVEL: "WARN",
  };
}

/** Runs a bundled child with plain node; its last line of output is its JSON result. */
async function runChild<T>(bundle: string, args: string[], env: NodeJS.ProcessEnv): Promise<T> {
  const { stdout, stderr } = await run(process.execPath, [bundle, ...args], { env, maxBuffer: 16 << 20 });
  if (process.env.BENCH_VERBOSE) process.stderr.write(stderr);
  return JSON.parse(stdout.trim().split("\n").at(-1) ?? "null") as T;
}

async function coldBench(
  bundles: Bundles,
  env: NodeJS.ProcessEnv,
  dataDir: string,
  model: BenchModel,
  artifactKey: string,
) {
  const modelPath = join(dataDir, "mlp50.onnx");
  await writeFile(modelPath, model.bytes);
  const dim = String(model.dims[1]);
  const child = (args: string[], childEnv: NodeJS.ProcessEnv = env) =>
    runChild<Record<string, number>>(bundles.coldChild, args, childEnv);

  const raw: Record<string, number>[] = [];
  const served: Record<string, number>[] = [];
  const transfers: Record<string, number>[] = [];
  for (let i = 0; i < COLD_SAMPLES; i++) {
    raw.push(await child(["raw", modelPath, dim, JSON.stringify(sessionOptions())]));
    const artifactDir = await mkdtemp(join(tmpdir(), "maas-cold-"));
    served.push(
      await child(["handler", bundles.handler, model.name, dim], {
        ...env,
        MAAS_ARTIFACT_DIR: artifactDir,
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
