/**
 * `npm run bench:optimize`: what the optimize function makes of two models, measured in one run.
 *   1. The optimizer itself (optimizeVersion against the local emulators, real onnxruntime): every
 *      variant's size and p50 latency as a ratio of the original's, timed interleaved with it, the
 *      parity figures, whether it is lossless, and the variant selected. Models: a transformer-like MLP
 *      (six pre-norm residual blocks of 768/3072, 113 MB) published with maas.json
 *      `{"optimize": {"allowLossy": ["int8-dynamic"]}}` (int8 is lossy: it serves only when asked),
 *      and a small CNN (Conv/Relu/MaxPool/Gemm) published without a manifest.
 *   2. The quantizer's op forms and weight types on the first MLP, each timed interleaved with the
 *      original: why DynamicQuantizeMatMul with 7-bit int8 weights is the default.
 * Environment: BENCH_RUNS (timed runs per candidate, default 40), BENCH_BATCH (default 1),
 * BENCH_OPTIMIZE_MODELS (comma-separated, default "transformer-mlp,small-cnn"; "small-mlp" is a
 * 2x256/1024 MLP, opted in like the big one, for a run of seconds), BENCH_SKIP_FORMS=1 (skip part 2).
 */
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PutObjectCommand } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import * as ort from "onnxruntime-node";
import { OrtCandidateRuntime } from "#aws/onnx/candidate-runtime.ts";
import { DynamoModelRegistry } from "#aws/registry/dynamo-registry.ts";
import { S3DecisionStore } from "#aws/s3/decision-store.ts";
import { S3VariantStore } from "#aws/s3/variant-store.ts";
import type { ModelVersion, Variant } from "#core/model.ts";
import { inspectModel } from "#core/onnx/inspect.ts";
import {
  benchmark,
  DEFAULT_OPTIMIZER_SETTINGS,
  median,
  optimizeVersion,
} from "#core/optimize/optimization.ts";
import { compareOutputs, generateInputs } from "#core/optimize/parity.ts";
import { type QuantizeOptions, quantizeDynamicInt8 } from "#core/optimize/quantize.ts";
import { artifactKey, type Manifest, manifestKey } from "#core/registry/manifest.ts";
import { startEmulators } from "../local/emulators.ts";
import { buildCnnModel } from "../models/cnn.ts";
import { buildTransformerMlpModel } from "../models/transformer-mlp.ts";
import { formatMs, printTable } from "./stats.ts";

const RUNS = Number(process.env.BENCH_RUNS ?? 40);
const BATCH = Number(process.env.BENCH_BATCH ?? 1);
const MODELS = (process.env.BENCH_OPTIMIZE_MODELS ?? "transformer-mlp,small-cnn")
  .split(",")
  .map((name) => name.trim());
const SKIP_FORMS = process.env.BENCH_SKIP_FORMS === "1";
/** The publisher's opt-in: without it int8, lossy, is measured and recorded but never served. */
const ALLOW_INT8: Manifest = { optimize: { allowLossy: ["int8-dynamic"] } };
const BUCKET = "bench-models";
const TABLE = "bench-registry";

const ratio = (value: number | undefined, base: number | undefined) =>
  value === undefined || base === undefined ? "-" : `${(value / base).toFixed(3)}x`;
const mb = (bytes: number) => `${(bytes / 1024 ** 2).toFixed(1)} MB`;

const dir = await mkdtemp(join(tmpdir(), "maas-bench-optimize-"));
const emulators = await startEmulators({ dataDir: dir, s3Port: 0, bucket: BUCKET, table: TABLE });
try {
  const s3 = emulators.s3Client();
  const registry = new DynamoModelRegistry(emulators.dynamoClient(), TABLE);
  const runtime = new OrtCandidateRuntime();
  const deps = {
    registry,
    store: new S3VariantStore(s3),
    decisions: new S3DecisionStore(s3),
    runtime,
    now: () => new Date().toISOString(),
    settings: {
      ...DEFAULT_OPTIMIZER_SETTINGS,
      workDir: join(dir, "work"),
      benchmarkRuns: RUNS,
      benchmarkBatch: BATCH,
    },
  };

  const available = [
    {
      name: "transformer-mlp",
      label: "MLP 6x768/3072",
      bytes: () => buildTransformerMlpModel(),
      manifest: ALLOW_INT8,
    },
    {
      name: "small-mlp",
      label: "MLP 2x256/1024",
      bytes: () => buildTransformerMlpModel({ blocks: 2, width: 256, hidden: 1024 }),
      manifest: ALLOW_INT8,
    },
    { name: "small-cnn", label: "CNN 3x32x32", bytes: () => buildCnnModel(), manifest: undefined },
  ];
  const unknown = MODELS.filter((name) => !available.some((model) => model.name === name));
  if (unknown.length > 0) {
    throw new Error(
      `BENCH_OPTIMIZE_MODELS: unknown ${unknown.join(", ")}; use ${available.map((m) => m.name).join(", ")}`,
    );
  }
  const models = available
    .filter((model) => MODELS.includes(model.name))
    .map((model) => ({ ...model, bytes: model.bytes() }));
  const results: { label: string; record: ModelVersion }[] = [];
  for (const model of models) {
    if (model.manifest !== undefined) {
      await s3.send(
        new PutObjectCommand({
          Bucket: BUCKET,
          Key: manifestKey(model.name, 1),
          Body: JSON.stringify(model.manifest),
        }),
      );
    }
    const sha256 = createHash("sha256").update(model.bytes).digest("hex");
    const artifact = { bucket: BUCKET, key: artifactKey(sha256), sha256, bytes: model.bytes.byteLength };
    await new Upload({ client: s3, params: { Bucket: BUCKET, Key: artifact.key, Body: model.bytes } }).done();
    const now = new Date().toISOString();
    await registry.createVersion({
      name: model.name,
      version: 1,
      status: "ready",
      target: "lambda",
      artifact,
      signature: inspectModel(model.bytes).signature,
      variants: [],
      createdAt: now,
      updatedAt: now,
    });
    const started = performance.now();
    const outcome = await optimizeVersion({ name: model.name, version: 1 }, "bench", deps);
    if (outcome.outcome !== "optimized") throw new Error(`${model.name}: ${JSON.stringify(outcome)}`);
    console.log(`${model.label}: optimized in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    results.push({ label: model.label, record: (await registry.getVersionConsistent(model.name, 1))! });
  }

  console.log(
    `\noptimize function, lambda target: p50 of ${RUNS} interleaved runs per candidate, batch ${BATCH}, ` +
      `onnxruntime-node ${ort.env.versions.node}, serving's session options; MLPs opted in to int8 (maas.json allowLossy)\n`,
  );
  const rows: string[][] = [];
  for (const { label, record } of results) {
    const original = record.variants[0]!;
    for (const variant of record.variants) {
      rows.push([
        label,
        variant.kind,
        mb(variant.bytes),
        ratio(variant.bytes, original.bytes),
        variant.p50Ms === undefined ? "-" : formatMs(variant.p50Ms),
        ratio(variant.p50Ms, original.p50Ms),
        variant.winRate === undefined ? "-" : variant.winRate.toFixed(2),
        variant.loadMs === undefined ? "-" : formatMs(variant.loadMs),
        variant.parity ? variant.parity.cosine.toFixed(5) : "-",
        variant.parity?.top1Agreement === undefined ? "-" : variant.parity.top1Agreement.toFixed(3),
        variant.kind === "original"
          ? "-"
          : variant.error
            ? "error"
            : variant.parity?.passed
              ? "pass"
              : "FAIL",
        lossText(variant),
        variant.selected ? `<- selected${record.variantChoice ? ` (${record.variantChoice.by})` : ""}` : "",
      ]);
    }
  }
  printTable(
    [
      "model",
      "variant",
      "bytes",
      "bytes ratio",
      "p50 ms",
      "p50 ratio",
      "wins",
      "load ms",
      "cosine",
      "top-1",
      "gate",
      "outputs",
      "",
    ],
    rows,
  );

  console.log("");
  for (const { label, record } of results) console.log(verdict(label, record));

  const mlp = models.find((model) => model.name.endsWith("mlp"));
  if (mlp !== undefined && !SKIP_FORMS) await compareQuantizerForms(join(dir, "forms"), mlp.bytes);
} finally {
  await emulators.stop();
  await rm(dir, { recursive: true, force: true });
}

/** Lossless (may serve unasked), lossy (serves only when asked), or not compared: from the record. */
function lossText(variant: Variant): string {
  if (variant.kind === "original") return "-";
  const detail = variant.detail ?? "";
  if (detail.includes("; lossless:")) return "lossless";
  if (detail.includes("; lossy:")) return "lossy";
  return detail.includes("; not lossless") ? "differ" : "-";
}

function verdict(label: string, record: ModelVersion): string {
  const original = record.variants[0]!;
  const describe = (variant: Variant) => {
    const bytes = variant.bytes / original.bytes;
    const p50 = (variant.p50Ms ?? 0) / (original.p50Ms ?? 1);
    const cosine = variant.parity?.cosine;
    return {
      bytes,
      p50,
      cosine,
      text: `${variant.kind}: ${bytes.toFixed(3)}x bytes, ${p50.toFixed(3)}x p50, cosine ${cosine?.toFixed(5) ?? "1 (original)"}`,
    };
  };
  const selected = record.variants.find((variant: Variant) => variant.selected)!;
  const chosen = record.variantChoice ? ` (chosen by the ${record.variantChoice.by})` : "";
  if (label.startsWith("MLP")) {
    const int8 = record.variants.find((variant) => variant.kind === "int8-dynamic");
    if (int8 === undefined) return `${label}: no int8 variant was built`;
    const figures = describe(int8);
    const done = figures.bytes <= 0.3 && figures.p50 <= 0.75 && (figures.cosine ?? 0) >= 0.99;
    return (
      `${label}, opted in to ${figures.text}, gate ${int8.parity?.passed ? "pass" : "FAIL"} -> ${done ? "meets" : "MISSES"} <= 0.30x bytes, <= 0.75x p50, cosine >= 0.99; ` +
      `selected ${selected.kind}${chosen}`
    );
  }
  const figures = describe(selected);
  const safe =
    selected.kind === "original" ||
    (lossText(selected) === "lossless" && selected.parity?.passed === true && figures.p50 <= 1);
  return `${label} selected ${figures.text}${chosen} -> ${safe ? "lossless and not slower" : "SLOWER OR LOSSY"}`;
}

/** Each op form and weight type of the quantizer, timed interleaved with the original on one input. */
async function compareQuantizerForms(formsDir: string, model: Uint8Array): Promise<void> {
  const forms: [string, QuantizeOptions][] = [
    ["DynamicQuantizeMatMul, int8 7-bit (default)", {}],
    ["DynamicQuantizeMatMul, int8 7-bit per-channel", { perChannel: "always" }],
    ["DynamicQuantizeMatMul, int8 8-bit", { reduceRange: false }],
    ["DynamicQuantizeMatMul, uint8 8-bit", { weightType: "uint8", reduceRange: false }],
    ["DynamicQuantizeLinear+MatMulInteger, int8 7-bit", { ops: "onnx" }],
  ];
  await mkdir(formsDir, { recursive: true });
  const originalPath = join(formsDir, "original.onnx");
  await writeFile(originalPath, model);
  const runtime = new OrtCandidateRuntime();
  const paths = [originalPath];
  for (const [index, [, options]] of forms.entries()) {
    const path = join(formsDir, `form-${index}.onnx`);
    await writeFile(path, quantizeDynamicInt8(model, options).bytes);
    paths.push(path);
  }
  const signature = inspectModel(model).signature;
  const outputs = signature.outputs.map((spec) => spec.name);
  const [feed] = generateInputs(signature, { count: 1, batch: BATCH, seed: 7 });
  const parityFeeds = generateInputs(signature);
  const sessions = [];
  for (const path of paths) sessions.push(await runtime.open(path));
  try {
    const reference = [];
    for (const input of parityFeeds) reference.push(await sessions[0]!.run(input, outputs));
    const times = await benchmark(sessions, feed!, outputs, { benchmarkRuns: RUNS, warmupRuns: 3 });
    const base = median(times[0]!);
    const rows: string[][] = [];
    for (const [index, [label]] of forms.entries()) {
      const candidate = [];
      for (const input of parityFeeds) candidate.push(await sessions[index + 1]!.run(input, outputs));
      const parity = compareOutputs(reference, candidate);
      rows.push([
        label,
        formatMs(median(times[index + 1]!)),
        ratio(median(times[index + 1]!), base),
        parity.cosine.toFixed(5),
        parity.maxRelativeDiff.toFixed(4),
      ]);
    }
    console.log(`\nquantizer forms on the MLP (original p50 ${formatMs(base)} ms, same run)\n`);
    printTable(["form", "p50 ms", "p50 ratio", "cosine", "max abs diff / range"], rows);
  } finally {
    for (const session of sessions) await session.release();
  }
}
