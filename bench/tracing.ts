/**
 * `npm run bench:tracing`: what X-Ray tracing costs the inference function's cold start, Powertools
 * Tracer (aws-xray-sdk-core) against lambdas/aws/tracing/xray.ts, in one run, and what the EMF metrics
 * sink's import adds beside it. Each is bundled as the
 * function's asset is (esbuild, ESM, minified) with a tracer constructed, and imported in a new process;
 * an empty bundle is the baseline. Rounds alternate the three, so drift hits each alike.
 */
import { execFile } from "node:child_process";
import { mkdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { build } from "esbuild";
import { formatMs, median, printTable } from "./stats.ts";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 21);
const run = promisify(execFile);

const ENTRIES = {
  baseline: "export const ready = true;\n",
  "Powertools Tracer": [
    'import { Tracer } from "@aws-lambda-powertools/tracer";',
    'export const tracer = new Tracer({ serviceName: "maas-inference" });',
    "",
  ].join("\n"),
  "xray.ts (ours)": [
    'import { XRayRequestTracing } from "#aws/tracing/xray.ts";',
    'export const tracer = new XRayRequestTracing({ daemonAddress: "127.0.0.1:2000" });',
    "",
  ].join("\n"),
  // Not a tracer: the metrics the function also loads at start-up, for the cold path's whole account.
  "EMF sink (emf.ts)": [
    'import { EmfMetricsSink } from "#aws/metrics/emf-sink.ts";',
    'export const sink = new EmfMetricsSink({ functionName: "bench" });',
    "",
  ].join("\n"),
} as const;
type Entry = keyof typeof ENTRIES;

/** Imports a bundle in a new process and prints how long the import took, in ms. */
const IMPORTER =
  "const t=performance.now();await import(process.argv[1]);process.stdout.write(String(performance.now()-t));";

async function main(): Promise<void> {
  const outDir = join(process.cwd(), "node_modules", ".cache", "maas-bench-tracing");
  await mkdir(outDir, { recursive: true });
  const bundles = {} as Record<Entry, { path: string; bytes: number }>;
  for (const [name, source] of Object.entries(ENTRIES) as [Entry, string][]) {
    const slug = name.replace(/[^a-z]+/gi, "-").toLowerCase();
    const entry = join(process.cwd(), "bench", `.tracing-${slug}.ts`);
    const path = join(outDir, `${slug}.mjs`);
    await writeFile(entry, source);
    try {
      await build({
        entryPoints: [entry],
        outfile: path,
        bundle: true,
        platform: "node",
        format: "esm",
        target: "node22",
        minify: true,
        mainFields: ["module", "main"],
        banner: {
          js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);",
        },
        logLevel: "error",
      });
    } finally {
      await import("node:fs/promises").then(({ rm }) => rm(entry, { force: true }));
    }
    bundles[name] = { path, bytes: (await stat(path)).size };
  }

  const samples = Object.fromEntries(Object.keys(ENTRIES).map((name) => [name, [] as number[]])) as Record<
    Entry,
    number[]
  >;
  const names = Object.keys(ENTRIES) as Entry[];
  for (let round = 0; round < ROUNDS; round++) {
    for (const name of round % 2 === 0 ? names : names.toReversed()) {
      const { stdout } = await run(
        process.execPath,
        ["--input-type=module", "-e", IMPORTER, bundles[name].path],
        {
          // Off the inference function's settings: Powertools reads these at construction.
          env: {
            ...process.env,
            AWS_XRAY_DAEMON_ADDRESS: "127.0.0.1:2000",
            AWS_LAMBDA_FUNCTION_NAME: "bench",
          },
        },
      );
      samples[name].push(Number(stdout));
    }
  }

  const baseline = median(samples.baseline);
  console.log(
    `tracer import in a new process: median of ${ROUNDS} alternating rounds (node ${process.versions.node})\n`,
  );
  printTable(
    ["tracer", "bundle KB", "import ms", "over baseline ms"],
    names.map((name) => [
      name,
      (bundles[name].bytes / 1024).toFixed(1),
      formatMs(median(samples[name])),
      formatMs(median(samples[name]) - baseline),
    ]),
  );
  const powertools = median(samples["Powertools Tracer"]) - baseline;
  const ours = median(samples["xray.ts (ours)"]) - baseline;
  const metrics = median(samples["EMF sink (emf.ts)"]) - baseline;
  console.log(
    `\nmetrics and tracing as deployed (EMF sink + xray.ts) add ${formatMs(metrics + ours)} ms of import to a cold start; neither records anything before the first response`,
  );
  console.log(
    `Powertools Tracer adds ${formatMs(powertools)} ms to a cold start, xray.ts ${formatMs(ours)} ms: ${(powertools / Math.max(ours, 0.001)).toFixed(1)}x`,
  );
}

await main();
