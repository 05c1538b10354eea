import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { ArtifactRef, ModelVersion, ServableVersion, Variant, VariantParity } from "#core/model.ts";
import { InvalidManifestError, type Manifest, manifestKey, parseManifest } from "#core/registry/manifest.ts";
import { isServable, type ModelRegistryWriter } from "#core/registry/registry.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import { convertToFloat16 } from "./fp16.ts";
import {
  compareOutputs,
  DEFAULT_PARITY_THRESHOLDS,
  generateInputs,
  manifestSampleInputs,
  ParityInputError,
  type ParityThresholds,
} from "./parity.ts";
import { NothingToQuantizeError, type QuantizeOptions, quantizeDynamicInt8 } from "./quantize.ts";

/**
 * Optimization of a registered version: build variants of its model, hold each to the parity gate
 * against the original, benchmark what passes, and select the serving artifact. The version stays
 * servable throughout (`optimizing` serves its original), and ends `ready` whatever happens.
 */

/** The model bucket, as the optimizer uses it. */
export interface VariantStore {
  /** Downloads an artifact to `path`, verifying its size and sha256. */
  download(ref: ArtifactRef, path: string): Promise<void>;
  readText(bucket: string, key: string): Promise<string | undefined>;
  /** Uploads a local file to its content-addressed key (a no-op when already there). */
  putArtifact(bucket: string, path: string): Promise<ArtifactRef>;
}

export interface CandidateSession {
  run(inputs: readonly NamedTensor[], outputs: readonly string[]): Promise<NamedTensor[]>;
  release(): Promise<void>;
}

/** onnxruntime, as the optimizer needs it. */
export interface CandidateRuntime {
  /** A session with the options serving uses, so that benchmarks measure what clients will get. */
  open(path: string): Promise<CandidateSession>;
  /** Saves onnxruntime's own optimization of the graph at `level` to `target`. */
  optimizeGraph(source: string, target: string, level: GraphOptimizationLevel): Promise<void>;
}

/**
 * "extended" fusions are CPU-provider operators that any CPU runs; "all" adds layout transforms
 * (NCHWc blocking) tied to the vector width of the CPU that saved them, so it is never saved offline.
 * GPU targets get "basic" only: its rewrites (constant folding, redundant node removal) suit any provider.
 */
export type GraphOptimizationLevel = "basic" | "extended";

export interface OptimizerSettings {
  /** Scratch space for the original and its variants (in Lambda, under /tmp). */
  readonly workDir: string;
  readonly thresholds: ParityThresholds;
  /** Timed runs per candidate; the p50 is over these. @default 20 */
  readonly benchmarkRuns: number;
  /** Untimed runs first, so first-run allocations do not count. @default 3 */
  readonly warmupRuns: number;
  /** A variant must beat the original's p50 by this fraction to be selected: noise is not a speed-up. @default 0.05 */
  readonly minSpeedup: number;
  /** ...and be faster in at least this fraction of the interleaved rounds. @default 0.75 */
  readonly minWinRate: number;
  /** Generated parity inputs (when the manifest has no samples): feeds, and the batch of each. */
  readonly parityFeeds: number;
  readonly parityBatch: number;
  /** Batch size of the generated benchmark input; 1 is one client request. @default 1 */
  readonly benchmarkBatch: number;
  readonly quantize: QuantizeOptions;
  /** Larger originals are left unoptimized (recorded as such). */
  readonly maxModelBytes: number;
  /** An `optimizing` claim older than this belongs to a dead attempt and is taken over. */
  readonly leaseMs: number;
}

export const DEFAULT_OPTIMIZER_SETTINGS: Omit<OptimizerSettings, "workDir"> = {
  thresholds: DEFAULT_PARITY_THRESHOLDS,
  benchmarkRuns: 20,
  warmupRuns: 3,
  minSpeedup: 0.05,
  minWinRate: 0.75,
  parityFeeds: 4,
  parityBatch: 4,
  benchmarkBatch: 1,
  quantize: {},
  maxModelBytes: 1024 ** 3,
  leaseMs: 15 * 60 * 1000,
};

export interface OptimizerDeps {
  readonly registry: ModelRegistryWriter;
  readonly store: VariantStore;
  readonly runtime: CandidateRuntime;
  readonly now: () => string;
  readonly settings: OptimizerSettings;
}

export type OptimizationOutcome =
  | { readonly outcome: "optimized"; readonly selected: string; readonly variants: readonly Variant[] }
  | { readonly outcome: "failed"; readonly reason: string }
  | { readonly outcome: "duplicate" }
  | { readonly outcome: "in-progress" }
  | { readonly outcome: "superseded" }
  | { readonly outcome: "ignored"; readonly reason: string };

/** The model cannot be optimized: recorded on the version, which serves its original; not retried. */
class OptimizationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "OptimizationError";
  }
}

const ORIGINAL_KIND = "original";

/**
 * Optimizes one version, once. `attemptId` names this delivery of the message (the SQS message id):
 * a redelivery of the same message means its earlier attempt died, so it may take over the claim.
 * Model problems end `ready` on the original with `optimizeError`; infrastructure errors revert to
 * `ready` and throw, to be retried.
 */
export async function optimizeVersion(
  target: { readonly name: string; readonly version: number },
  attemptId: string,
  deps: OptimizerDeps,
): Promise<OptimizationOutcome> {
  const { name, version } = target;
  const record = await deps.registry.getVersionConsistent(name, version);
  if (record === undefined) return { outcome: "ignored", reason: "the version does not exist" };
  if (record.optimizedAt !== undefined) return { outcome: "duplicate" };
  if (!isServable(record)) return { outcome: "ignored", reason: `the version is ${record.status}` };
  if (!(await claim(record, attemptId, deps))) return { outcome: "in-progress" };

  let result: { variants: Variant[]; selected: string };
  try {
    result = await buildAndSelect(record, deps);
  } catch (error) {
    const reason = (error as Error).message;
    if (error instanceof OptimizationError) {
      await deps.registry.updateVersion(name, version, "optimizing", {
        status: "ready",
        optimizeError: reason,
        optimizedAt: deps.now(),
        updatedAt: deps.now(),
      });
      return { outcome: "failed", reason };
    }
    // Back to ready so that the retry can claim it again; the version serves its original meanwhile.
    await deps.registry.updateVersion(name, version, "optimizing", {
      status: "ready",
      optimizeAttempt: { id: attemptId, startedAt: deps.now(), error: reason },
      updatedAt: deps.now(),
    });
    throw error;
  }
  const finished = await deps.registry.updateVersion(name, version, "optimizing", {
    status: "ready",
    variants: result.variants,
    optimizedAt: deps.now(),
    updatedAt: deps.now(),
  });
  return finished ? { outcome: "optimized", ...result } : { outcome: "superseded" };
}

/** Moves the version to `optimizing` for this attempt: from `ready`, or from a dead attempt's claim. */
async function claim(record: ServableVersion, attemptId: string, deps: OptimizerDeps): Promise<boolean> {
  const now = deps.now();
  const changes = {
    status: "optimizing" as const,
    optimizeAttempt: { id: attemptId, startedAt: now },
    updatedAt: now,
  };
  if (record.status === "ready")
    return deps.registry.updateVersion(record.name, record.version, "ready", changes);
  const held = record.optimizeAttempt;
  const stale =
    held === undefined ||
    held.id === attemptId ||
    Date.parse(now) - Date.parse(held.startedAt) > deps.settings.leaseMs;
  // A live attempt holds its own message until it finishes: if it dies, that message returns and takes over.
  if (!stale) return false;
  return deps.registry.updateVersion(record.name, record.version, "optimizing", changes);
}

interface Candidate {
  readonly kind: string;
  readonly detail: string;
  /** Writes the variant to `path`. */
  build(original: { path: string; bytes: Uint8Array }, path: string): Promise<void>;
}

function candidatesFor(version: ServableVersion, deps: OptimizerDeps): Candidate[] {
  const graph = (level: GraphOptimizationLevel): Candidate => ({
    kind: `graph-${level}`,
    detail: `onnxruntime graph optimization, level ${level}, saved offline`,
    build: (original, path) => deps.runtime.optimizeGraph(original.path, path, level),
  });
  if (version.target === "sagemaker") {
    return [
      graph("basic"),
      {
        kind: "fp16",
        detail: "FP16 weights and activations, FP32 inputs and outputs",
        build: async (original, path) => writeFile(path, convertToFloat16(original.bytes).bytes),
      },
    ];
  }
  const quantize = deps.settings.quantize;
  return [
    graph("extended"),
    {
      kind: "int8-dynamic",
      detail: describeQuantization(quantize),
      build: async (original, path) => writeFile(path, quantizeDynamicInt8(original.bytes, quantize).bytes),
    },
  ];
}

function describeQuantization(options: QuantizeOptions): string {
  const weights = options.weightType ?? "int8";
  const bits = (options.reduceRange ?? true) ? "7-bit" : "8-bit";
  const ops =
    (options.ops ?? "contrib") === "contrib" ? "com.microsoft DynamicQuantizeMatMul" : "MatMulInteger";
  return `dynamic quantization of MatMul/Gemm weights: ${bits} ${weights}, per-channel ${options.perChannel ?? "auto"}, ${ops}`;
}

interface Built {
  readonly candidate: Candidate;
  readonly path: string;
  readonly bytes: number;
  session?: CandidateSession;
  loadMs?: number;
  parity?: VariantParity;
  error?: string;
  times: number[];
  /** Over `times`, set once it has raced the original: selection and the record both use them. */
  p50Ms?: number;
  winRate?: number;
}

async function buildAndSelect(
  version: ServableVersion,
  deps: OptimizerDeps,
): Promise<{ variants: Variant[]; selected: string }> {
  const { settings } = deps;
  if (version.artifact.bytes > settings.maxModelBytes) {
    throw new OptimizationError(
      `the model is ${version.artifact.bytes} bytes; the optimizer takes models up to ${settings.maxModelBytes} bytes`,
    );
  }
  await mkdir(settings.workDir, { recursive: true });
  const dir = await mkdtemp(join(settings.workDir, `${version.name}-${version.version}-`));
  const opened = new Set<CandidateSession>();
  try {
    const originalPath = join(dir, "original.onnx");
    await deps.store.download(version.artifact, originalPath);
    const manifest = await readManifest(version, deps);
    const { feeds, benchFeed, source } = parityInputs(version, manifest, settings);
    const outputs = version.signature.outputs.map((spec) => spec.name);

    const loadStarted = performance.now();
    const original = await deps.runtime.open(originalPath).catch((error: Error) => {
      throw new OptimizationError(`onnxruntime cannot load the original: ${error.message}`);
    });
    const originalLoadMs = performance.now() - loadStarted;
    opened.add(original);
    const reference: NamedTensor[][] = [];
    for (const feed of feeds) {
      reference.push(
        await original.run(feed, outputs).catch((error: Error) => {
          throw new OptimizationError(
            `the original fails on the parity inputs (${source}): ${error.message}`,
          );
        }),
      );
    }

    const bytes = await readFile(originalPath);
    const built: Built[] = [];
    for (const candidate of candidatesFor(version, deps)) {
      const path = join(dir, `${candidate.kind}.onnx`);
      const entry: Built = { candidate, path, bytes: 0, times: [] };
      built.push(entry);
      try {
        await candidate.build({ path: originalPath, bytes }, path);
        Object.assign(entry, { bytes: (await stat(path)).size });
        const started = performance.now();
        entry.session = await deps.runtime.open(path);
        entry.loadMs = performance.now() - started;
        opened.add(entry.session);
        const results: NamedTensor[][] = [];
        for (const feed of feeds) results.push(await entry.session.run(feed, outputs));
        entry.parity = {
          ...compareOutputs(reference, results, settings.thresholds, version.labels?.length),
          inputs: source,
        };
        // A failing variant's session is not benchmarked: free its memory now.
        if (!entry.parity.passed) {
          opened.delete(entry.session);
          await entry.session.release();
        }
      } catch (error) {
        entry.error =
          error instanceof NothingToQuantizeError
            ? error.message
            : `${candidate.kind}: ${(error as Error).message}`;
      }
    }

    const racing = built.filter((entry) => entry.parity?.passed && entry.session);
    const originalTimes = await benchmark(
      [original, ...racing.map((entry) => entry.session!)],
      benchFeed,
      outputs,
      settings,
    );
    const baseline = originalTimes[0] ?? [];
    racing.forEach((entry, index) => {
      entry.times = originalTimes[index + 1] ?? [];
      entry.p50Ms = median(entry.times);
      entry.winRate = winRate(entry.times, baseline);
    });
    const originalP50 = median(baseline);
    const selectedKind = selectVariant(
      version.target,
      racing.map((entry) => ({
        kind: entry.candidate.kind,
        passed: true,
        p50Ms: entry.p50Ms,
        winRate: entry.winRate,
      })),
      originalP50,
      {
        minSpeedup: settings.minSpeedup,
        minWinRate: settings.minWinRate,
        pinOriginal: manifest.pinOriginal ?? false,
      },
    );
    const selected = built.find((entry) => entry.candidate.kind === selectedKind);

    const variants: Variant[] = [
      {
        kind: ORIGINAL_KIND,
        bytes: version.artifact.bytes,
        selected: selected === undefined,
        artifact: version.artifact,
        detail: manifest.pinOriginal ? "pinned by maas.json (pinOriginal)" : "the upload as registered",
        p50Ms: figure(originalP50),
        benchmarkRuns: settings.benchmarkRuns,
        loadMs: figure(originalLoadMs),
      },
    ];
    for (const entry of built) {
      // Every variant that was built is kept, passing or not, so that its figures can be checked.
      const artifact =
        entry.error === undefined
          ? await deps.store.putArtifact(version.artifact.bucket, entry.path)
          : undefined;
      variants.push({
        kind: entry.candidate.kind,
        bytes: entry.bytes,
        selected: entry === selected,
        detail: entry.candidate.detail,
        ...(artifact ? { artifact } : {}),
        // Only a racing entry has times, and so its figures.
        ...(entry.times.length > 0
          ? {
              p50Ms: figure(entry.p50Ms!),
              benchmarkRuns: entry.times.length,
              winRate: figure(entry.winRate!),
            }
          : {}),
        ...(entry.loadMs === undefined ? {} : { loadMs: figure(entry.loadMs) }),
        ...(entry.parity ? { parity: finiteParity(entry.parity) } : {}),
        ...(entry.error === undefined ? {} : { error: entry.error }),
      });
    }
    return { variants, selected: selected?.candidate.kind ?? ORIGINAL_KIND };
  } finally {
    for (const session of opened) await session.release().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

/** What selection looks at for each variant that was built. */
export interface SelectionCandidate {
  readonly kind: string;
  readonly passed: boolean;
  readonly p50Ms?: number;
  /** Fraction of interleaved rounds in which it ran faster than the original. */
  readonly winRate?: number;
}

/**
 * The variant to serve, or undefined for the original. Lambda targets: the fastest variant that passed
 * the gate, if it beats the original's p50 by `minSpeedup` and won at least `minWinRate` of the rounds
 * (a p50 gap that is noise wins about half of them). GPU targets: FP16 if it passed the gate:
 * the optimizer's CPU cannot time a GPU, and FP16 halves the bytes a GPU reads and runs on its tensor
 * cores. A manifest's `pinOriginal` keeps the original in every case.
 */
export function selectVariant(
  target: ModelVersion["target"],
  candidates: readonly SelectionCandidate[],
  originalP50Ms: number,
  options: { readonly minSpeedup: number; readonly minWinRate?: number; readonly pinOriginal?: boolean },
): string | undefined {
  if (options.pinOriginal) return undefined;
  const passing = candidates.filter((candidate) => candidate.passed);
  // The SageMaker path serves the original upload's archive: variants are measured and recorded for
  // GPU targets, but selecting one would promise what the endpoint does not serve yet.
  if (target === "sagemaker") return undefined;
  let best: SelectionCandidate | undefined;
  for (const candidate of passing) {
    const p50 = candidate.p50Ms;
    if (p50 === undefined || !(p50 <= originalP50Ms * (1 - options.minSpeedup))) continue;
    if ((candidate.winRate ?? 1) < (options.minWinRate ?? 0)) continue;
    if (best?.p50Ms === undefined || p50 < best.p50Ms) best = candidate;
  }
  return best?.kind;
}

async function readManifest(version: ServableVersion, deps: OptimizerDeps): Promise<Manifest> {
  const text = await deps.store.readText(version.artifact.bucket, manifestKey(version.name, version.version));
  if (text === undefined) return {};
  try {
    return parseManifest(text);
  } catch (error) {
    if (error instanceof InvalidManifestError) throw new OptimizationError(error.message);
    throw error;
  }
}

function parityInputs(version: ServableVersion, manifest: Manifest, settings: OptimizerSettings) {
  try {
    const samples = manifestSampleInputs(manifest, version.signature);
    if (samples !== undefined) return { feeds: samples, benchFeed: samples[0]!, source: "samples" as const };
    const feeds = generateInputs(version.signature, {
      count: settings.parityFeeds,
      batch: settings.parityBatch,
    });
    const [benchFeed] = generateInputs(version.signature, {
      count: 1,
      batch: settings.benchmarkBatch,
      seed: 7,
    });
    return { feeds, benchFeed: benchFeed!, source: "generated" as const };
  } catch (error) {
    if (error instanceof ParityInputError) throw new OptimizationError(error.message);
    throw error;
  }
}

/**
 * Times every session on the same input, interleaved run by run (rotating who goes first), so that
 * load from other processes falls on all candidates alike rather than on whichever ran during it.
 */
export async function benchmark(
  sessions: readonly CandidateSession[],
  feed: readonly NamedTensor[],
  outputs: readonly string[],
  settings: Pick<OptimizerSettings, "benchmarkRuns" | "warmupRuns">,
): Promise<number[][]> {
  for (let run = 0; run < settings.warmupRuns; run++) {
    for (const session of sessions) await session.run(feed, outputs);
  }
  const times = sessions.map(() => [] as number[]);
  for (let run = 0; run < settings.benchmarkRuns; run++) {
    for (let turn = 0; turn < sessions.length; turn++) {
      const index = (run + turn) % sessions.length;
      const started = performance.now();
      await sessions[index]!.run(feed, outputs);
      times[index]!.push(performance.now() - started);
    }
  }
  return times;
}

/** Fraction of rounds (same index: run back to back) in which `times` beat `baseline`. */
export function winRate(times: readonly number[], baseline: readonly number[]): number {
  const rounds = Math.min(times.length, baseline.length);
  let wins = 0;
  for (let round = 0; round < rounds; round++) if (times[round]! < baseline[round]!) wins++;
  return rounds === 0 ? 0 : wins / rounds;
}

export function median(samples: readonly number[]): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** DynamoDB numbers hold neither infinities nor magnitudes beyond 1e125, nor more than 38 digits. */
function figure(value: number): number {
  if (Number.isNaN(value)) return 0;
  if (!Number.isFinite(value) || Math.abs(value) > 1e125) return Math.sign(value) * 1e125;
  if (Math.abs(value) < 1e-120) return 0;
  return Number(value.toPrecision(7));
}

function finiteParity(parity: VariantParity): VariantParity {
  return {
    ...parity,
    maxAbsDiff: figure(parity.maxAbsDiff),
    maxRelativeDiff: figure(parity.maxRelativeDiff),
    cosine: figure(parity.cosine),
    ...(parity.top1Agreement === undefined ? {} : { top1Agreement: figure(parity.top1Agreement) }),
  };
}
