/**
 * `npm run bench:optimize`: what the optimize function makes of two models, measured in one run.
 *   1. The optimizer itself (optimizeVersion against the local emulators, real onnxruntime): every
 *      variant's size and p50 latency as a ratio of the original's, timed interleaved with it, the
 *      parity figures and the variant the gate selected. Models: a transformer-like MLP (six pre-norm
 *      residual blocks of 768/3072, 113 MB) and a small CNN (Conv/Relu/MaxPool/Gemm).
 *   2. The quantizer's op forms and weight types on the MLP, each timed interleaved with the original:
 *      why DynamicQuantizeMatMul with 7-bit int8 weights is the default.
 * Environment: BENCH_RUNS (timed runs per candidate, default 40), BENCH_BATCH (default 1).
 */
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Upload } from "@aws-sdk/lib-storage";
import * as ort from "onnxruntime-node";
import { OrtCandidateRuntime } from "#aws/onnx/candidate-runtime.ts";
import { DynamoModelRegistry } from "#aws/registry/dynamo-registry.ts";
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
import { artifactKey } from "#core/registry/manifest.ts";
import { startEmulators } from "../local/emulators.ts";
import { buildCnnModel } from "../models/cnn.ts";
import { buildTransformerMlpModel } from "../models/transformer-mlp.ts";
import { formatMs, printTable } from "./stats.ts";

const RUNS = Number(process.env.BENCH_RUNS ?? 40);
const BATCH = Number(process.env.BENCH_BATCH ?? 1);
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
    runtime,
    now: () => new Date().toISOString(),
    settings: {
      ...DEFAULT_OPTIMIZER_SETTINGS,
      workDir: join(dir, "work"),
      benchmarkRuns: RUNS,
      benchmarkBatch: BATCH,
    },
  };

  const models = [
    { name: "transformer-mlp", label: "MLP 6x768/3072", bytes: buildTransformerMlpModel() },
    { name: "small-cnn", label: "CNN 3x32x32", bytes: buildCnnModel() },
  ];
  const results: { label: string; record: ModelVersion }[] = [];
  for (const model of models) {
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
      `onnxruntime-node ${ort.env.versions.node}, serving's session options\n`,
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
        variant.selected ? "<- selected" : "",
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
      "",
    ],
    rows,
  );

  console.log("");
  for (const { label, record } of results) console.log(verdict(label, record));

  await compareQuantizerForms(join(dir, "forms"), models[0]!.bytes);
} finally {
  await emulators.stop();
  await rm(dir, { recursive: true, force: true });
}

function verdict(label: string, record: ModelVersion): string {
  const original = record.variants[0]!;
  const selected = record.variants.find((variant: Variant) => variant.selected)!;
  const bytes = selected.bytes / original.bytes;
  const p50 = (selected.p50Ms ?? 0) / (original.p50Ms ?? 1);
  const cosine = selected.parity?.cosine;
  const figures = `${selected.kind}: ${bytes.toFixed(3)}x bytes, ${p50.toFixed(3)}x p50, cosine ${cosine?.toFixed(5) ?? "1 (original)"}`;
  if (label.startsWith("MLP")) {
    const done = bytes <= 0.3 && p50 <= 0.75 && (cosine ?? 0) >= 0.99;
    return `${label} selected ${figures} -> ${done ? "meets" : "MISSES"} <= 0.30x bytes, <= 0.75x p50, cosine >= 0.99`;
  }
  const safe = selected.kind === "original" || (selected.parity?.passed === true && p50 <= 1);
  return `${label} selected ${figures} -> ${safe ? "within tolerance and not slower" : "SLOWER OR LESS ACCURATE"}`;
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
