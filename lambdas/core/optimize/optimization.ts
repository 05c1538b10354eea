import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { ArtifactRef, ServableVersion, Variant, VariantParity } from "#core/model.ts";
import { ORIGINAL_VARIANT } from "#core/model.ts";
import {
  InvalidManifestError,
  LOSSY_VARIANT_KINDS,
  type Manifest,
  manifestKey,
  parseManifest,
} from "#core/registry/manifest.ts";
import { isServable, type ModelRegistryWriter } from "#core/registry/registry.ts";
import { isTextTask, type TextTaskVersion, tokenizerFeeds } from "#core/tasks/text-task.ts";
import { loadTextTokenizer } from "#core/tasks/tokenizer.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import {
  DECISION_FORMAT,
  type DecisionStore,
  decisionKey,
  digestSettings,
  InvalidDecisionError,
  type OptimizationDecision,
  parseDecision,
} from "./decision.ts";
import { convertToFloat16 } from "./fp16.ts";
import {
  checkLossless,
  compareOutputs,
  DEFAULT_MAX_FEED_BYTES,
  DEFAULT_PARITY_THRESHOLDS,
  generateInputs,
  LOSSLESS_TOLERANCE,
  manifestSampleInputs,
  ParityInputError,
  type ParityThresholds,
} from "./parity.ts";
import { NothingToQuantizeError, type QuantizeOptions, quantizeDynamicInt8 } from "./quantize.ts";
import { selectKind, selectVariant } from "./selection.ts";
import { registryMessage, registryNumber } from "./storable.ts";

/**
 * Optimization of a registered version: build variants of its model, hold each to the parity gate
 * against the original, benchmark what passes, and select the serving artifact: a lossless variant,
 * or a lossy one only when the manifest allows its kind (an operator may choose later). The decision
 * is kept per sha256 and settings, so identical bytes serve identical artifacts. The version stays
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
  /** A generated feed needing more bytes is not made: the version is left on its original. @default 64 MiB */
  readonly maxParityFeedBytes: number;
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
  maxParityFeedBytes: DEFAULT_MAX_FEED_BYTES,
  benchmarkBatch: 1,
  quantize: {},
  maxModelBytes: 1024 ** 3,
  leaseMs: 15 * 60 * 1000,
};

export interface OptimizerDeps {
  readonly registry: ModelRegistryWriter;
  readonly store: VariantStore;
  /** Where the decision for each sha256 and settings is kept (the model bucket). */
  readonly decisions: DecisionStore;
  readonly runtime: CandidateRuntime;
  readonly now: () => string;
  readonly settings: OptimizerSettings;
}

export type OptimizationOutcome =
  | {
      readonly outcome: "optimized";
      readonly selected: string;
      readonly variants: readonly Variant[];
      /** Whether the decision was an earlier optimization's of the same bytes and settings. */
      readonly reused: boolean;
    }
  | {
      readonly outcome: "failed";
      readonly reason: string;
      /** An infrastructure failure on the last attempt, or a dead letter: not the model's doing. */
      readonly unfinished: boolean;
    }
  | { readonly outcome: "duplicate" }
  | { readonly outcome: "in-progress" }
  | { readonly outcome: "superseded" }
  | { readonly outcome: "ignored"; readonly reason: string };

export interface AttemptOptions {
  /**
   * No retry follows this attempt (the message's last receive before its dead-letter queue): a
   * failure ends the optimization, recorded, rather than being thrown. @default false
   */
  readonly lastAttempt?: boolean;
  /** Receives of the message so far, for the recorded reason. @default 1 */
  readonly attempts?: number;
}

/** The model cannot be optimized: recorded on the version, which serves its original; not retried. */
class OptimizationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "OptimizationError";
  }
}

/** The reason recorded when retries are spent, by the last attempt and by the dead-letter handler alike. */
export function unfinishedReason(attempts: number, lastError: string): string {
  return `optimization did not finish after ${attempts} attempt${attempts === 1 ? "" : "s"}: ${lastError}`;
}

/**
 * Optimizes one version, once. `attemptId` names this delivery of the message (the SQS message id):
 * a redelivery of the same message means its earlier attempt died, so it may take over the claim.
 * Model problems end `ready` on the original with `optimizeError`; infrastructure errors revert to
 * `ready` and throw, to be retried, except on the last attempt, which records them instead.
 */
export async function optimizeVersion(
  target: { readonly name: string; readonly version: number },
  attemptId: string,
  deps: OptimizerDeps,
  options: AttemptOptions = {},
): Promise<OptimizationOutcome> {
  const { name, version } = target;
  const record = await unoptimizedVersion(target, deps);
  if ("outcome" in record) return record;
  if (!(await claim(record, attemptId, deps))) return { outcome: "in-progress" };

  const giveUp = async (reason: string, unfinished: boolean): Promise<OptimizationOutcome> => {
    await deps.registry.updateVersion(name, version, "optimizing", givenUp(reason, deps.now()));
    return { outcome: "failed", reason, unfinished };
  };
  const retryOrGiveUp = async (error: unknown): Promise<OptimizationOutcome> => {
    const reason = registryMessage((error as Error).message ?? String(error));
    if (options.lastAttempt) return giveUp(unfinishedReason(options.attempts ?? 1, reason), true);
    // Back to ready so that the retry can claim it again; the version serves its original meanwhile.
    await deps.registry.updateVersion(name, version, "optimizing", {
      status: "ready",
      optimizeAttempt: { id: attemptId, startedAt: deps.now(), error: reason },
      updatedAt: deps.now(),
    });
    throw error;
  };

  let decided: { decision: OptimizationDecision; reused: boolean };
  try {
    decided = await decide(record, deps);
  } catch (error) {
    if (error instanceof OptimizationError) return giveUp(error.message, false);
    return retryOrGiveUp(error);
  }
  try {
    const changes = await resultChanges(record, decided.decision, deps);
    const finished = await deps.registry.updateVersion(name, version, "optimizing", changes);
    if (!finished) return { outcome: "superseded" };
    const variants = changes.variants ?? [];
    return {
      outcome: "optimized",
      selected: variants.find((variant) => variant.selected)?.kind ?? ORIGINAL_VARIANT,
      variants,
      reused: decided.reused,
    };
  } catch (error) {
    return retryOrGiveUp(error);
  }
}

/**
 * Gives up on a version whose optimize message was dead-lettered (its attempts crashed, timed out or
 * could not record their failure): a version still `optimizing` under that message, or never
 * optimized, ends `ready` on its original with the reason. A live attempt of another message is left
 * alone (`in-progress`: the caller asks again later, when it has finished or its lease has run out).
 */
export async function abandonOptimization(
  target: { readonly name: string; readonly version: number },
  messageId: string,
  attempts: number,
  deps: Pick<OptimizerDeps, "registry" | "now" | "settings">,
): Promise<OptimizationOutcome> {
  const { name, version } = target;
  const record = await unoptimizedVersion(target, deps);
  if ("outcome" in record) return record;
  const held = record.optimizeAttempt;
  if (record.status === "optimizing" && held !== undefined && held.id !== messageId && !expired(held, deps)) {
    return { outcome: "in-progress" };
  }
  const reason = unfinishedReason(
    attempts,
    held?.error ?? "no error was recorded (the function timed out or its process ended)",
  );
  const done = await deps.registry.updateVersion(name, version, record.status, givenUp(reason, deps.now()));
  return done ? { outcome: "failed", reason, unfinished: true } : { outcome: "superseded" };
}

/** The version to optimize, or the outcome for one that is gone, already optimized or not servable. */
async function unoptimizedVersion(
  target: { readonly name: string; readonly version: number },
  deps: Pick<OptimizerDeps, "registry">,
): Promise<ServableVersion | OptimizationOutcome> {
  const record = await deps.registry.getVersionConsistent(target.name, target.version);
  if (record === undefined) return { outcome: "ignored", reason: "the version does not exist" };
  if (record.optimizedAt !== undefined) return { outcome: "duplicate" };
  if (!isServable(record)) return { outcome: "ignored", reason: `the version is ${record.status}` };
  return record;
}

/** A version's last optimization write when it gives up: ready on its original, with the reason. */
function givenUp(reason: string, now: string) {
  return {
    status: "ready" as const,
    optimizeError: registryMessage(reason),
    optimizedAt: now,
    updatedAt: now,
  };
}

function expired(
  held: { readonly startedAt: string },
  deps: Pick<OptimizerDeps, "now" | "settings">,
): boolean {
  return Date.parse(deps.now()) - Date.parse(held.startedAt) > deps.settings.leaseMs;
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
  const stale = held === undefined || held.id === attemptId || expired(held, deps);
  // A live attempt holds its own message until it finishes: if it dies, that message returns and takes over.
  if (!stale) return false;
  return deps.registry.updateVersion(record.name, record.version, "optimizing", changes);
}

/**
 * The record's final fields from the decision. An operator's choice made meanwhile stands (read
 * again now, the latest write wins); a lossy selection by the manifest is recorded as its choice.
 */
async function resultChanges(record: ServableVersion, decision: OptimizationDecision, deps: OptimizerDeps) {
  const current = await deps.registry.getVersionConsistent(record.name, record.version);
  const operator = current?.variantChoice?.by === "operator" ? current.variantChoice : undefined;
  const variants = operator ? selectKind(decision.variants, operator.kind) : [...decision.variants];
  const now = deps.now();
  return {
    status: "ready" as const,
    variants: markLossless(variants, decision.lossless),
    ...(operator === undefined && decision.by === "manifest"
      ? { variantChoice: { kind: decision.selected, by: "manifest" as const, at: now } }
      : {}),
    optimizedAt: now,
    updatedAt: now,
  };
}

/** `parity.lossless` on each variant that was compared, from the decision's list. */
function markLossless(variants: readonly Variant[], lossless: readonly string[]): Variant[] {
  return variants.map((variant) => {
    if (variant.parity === undefined) return variant;
    return { ...variant, parity: { ...variant.parity, lossless: lossless.includes(variant.kind) } };
  });
}

/**
 * The decision for this version's bytes and settings: the one recorded by an earlier optimization of
 * the same sha256, else a new one, measured, then recorded unless another optimization recorded first.
 */
async function decide(
  version: ServableVersion,
  deps: OptimizerDeps,
): Promise<{ decision: OptimizationDecision; reused: boolean }> {
  const { settings } = deps;
  if (version.artifact.bytes > settings.maxModelBytes) {
    throw new OptimizationError(
      `the model is ${version.artifact.bytes} bytes; the optimizer takes models up to ${settings.maxModelBytes} bytes`,
    );
  }
  const manifest = await readManifest(version, deps);
  const candidates = candidatesFor(version, deps);
  const decisionSettings = settingsOfDecision(version, manifest, candidates, settings);
  const expected = { sha256: version.artifact.sha256, settingsDigest: digestSettings(decisionSettings) };
  const bucket = version.artifact.bucket;
  const key = decisionKey(expected.sha256, expected.settingsDigest);
  const recorded = await readDecision(bucket, key, expected, deps);
  if (recorded !== undefined) return { decision: recorded, reused: true };

  const measured = await buildAndSelect(version, manifest, candidates, deps);
  const decision: OptimizationDecision = {
    format: DECISION_FORMAT,
    ...expected,
    settings: decisionSettings,
    decidedAt: deps.now(),
    ...measured,
  };
  if (await deps.decisions.putOnce(bucket, key, `${JSON.stringify(decision, null, 2)}\n`)) {
    return { decision, reused: false };
  }
  // Another optimization of the same bytes recorded its decision first: that one stands.
  const winner = await readDecision(bucket, key, expected, deps);
  if (winner === undefined)
    throw new Error(`the optimization decision ${key} was refused but cannot be read`);
  return { decision: winner, reused: true };
}

async function readDecision(
  bucket: string,
  key: string,
  expected: { readonly sha256: string; readonly settingsDigest: string },
  deps: OptimizerDeps,
): Promise<OptimizationDecision | undefined> {
  const text = await deps.decisions.read(bucket, key);
  if (text === undefined) return undefined;
  try {
    return parseDecision(text, expected);
  } catch (error) {
    // Written once and never replaced: deciding again would serve these bytes differently.
    if (error instanceof InvalidDecisionError) throw new OptimizationError(error.message);
    throw error;
  }
}

/**
 * Everything that decides which variants are built and which may be selected, in a fixed key order:
 * its digest names the decision. Benchmark run counts are left out (they refine the same measurement).
 */
function settingsOfDecision(
  version: ServableVersion,
  manifest: Manifest,
  candidates: readonly Candidate[],
  settings: OptimizerSettings,
): Record<string, unknown> {
  const samples = manifest.samples ?? [];
  return {
    format: DECISION_FORMAT,
    target: version.target,
    candidates: candidates.map((candidate) => `${candidate.kind}: ${candidate.detail}`),
    quantize: settings.quantize,
    thresholds: settings.thresholds,
    losslessTolerance: LOSSLESS_TOLERANCE,
    minSpeedup: settings.minSpeedup,
    minWinRate: settings.minWinRate,
    parityInputs:
      samples.length > 0
        ? { samplesSha256: createHash("sha256").update(JSON.stringify(samples)).digest("hex") }
        : { feeds: settings.parityFeeds, batch: settings.parityBatch },
    benchmarkBatch: settings.benchmarkBatch,
    classCount: version.labels?.length ?? null,
    pinOriginal: manifest.pinOriginal ?? false,
    allowLossy: [...(manifest.optimize?.allowLossy ?? [])].sort(),
  };
}

interface Candidate {
  readonly kind: string;
  readonly detail: string;
  /** Outputs differ from the original's by construction (fewer bits): never selected unasked. */
  readonly lossy: boolean;
  /** Writes the variant to `path`. */
  build(original: { path: string; bytes: Uint8Array }, path: string): Promise<void>;
}

const isLossyKind = (kind: string) => (LOSSY_VARIANT_KINDS as readonly string[]).includes(kind);

function candidatesFor(version: ServableVersion, deps: OptimizerDeps): Candidate[] {
  const graph = (level: GraphOptimizationLevel): Candidate => ({
    kind: `graph-${level}`,
    detail: `onnxruntime graph optimization, level ${level}, saved offline`,
    lossy: false,
    build: (original, path) => deps.runtime.optimizeGraph(original.path, path, level),
  });
  if (version.target === "sagemaker") {
    return [
      graph("basic"),
      {
        kind: "fp16",
        detail: "FP16 weights and activations, FP32 inputs and outputs",
        lossy: isLossyKind("fp16"),
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
      lossy: isLossyKind("int8-dynamic"),
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
  /** Set once compared: passed the gate, a lossless kind, and within float32 tolerance everywhere. */
  lossless?: boolean;
  /** Why a lossless kind's outputs were not lossless on these inputs. */
  notLossless?: string;
  error?: string;
  times: number[];
  /** Over `times`, set once it has raced the original: selection and the record both use them. */
  p50Ms?: number;
  winRate?: number;
}

type Measured = Pick<OptimizationDecision, "selected" | "by" | "lossless" | "variants">;

async function buildAndSelect(
  version: ServableVersion,
  manifest: Manifest,
  candidates: readonly Candidate[],
  deps: OptimizerDeps,
): Promise<Measured> {
  const { settings } = deps;
  await mkdir(settings.workDir, { recursive: true });
  const dir = await mkdtemp(join(settings.workDir, `${version.name}-${version.version}-`));
  const opened = new Set<CandidateSession>();
  try {
    const originalPath = join(dir, "original.onnx");
    await deps.store.download(version.artifact, originalPath);
    const { feeds, benchFeed, source } = await parityInputs(version, manifest, settings, deps);
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
    for (const candidate of candidates) {
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
        if (entry.parity.passed && !candidate.lossy) {
          const check = checkLossless(reference, results);
          entry.lossless = check.lossless;
          if (check.reason !== undefined) entry.notLossless = check.reason;
        } else {
          entry.lossless = false;
        }
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

    // Lossy variants that pass race too: their figures are what a person weighs before choosing one.
    const racing = built.filter(
      (entry) => entry.parity?.passed && entry.session && entry.error === undefined,
    );
    const times = await benchmark(
      [original, ...racing.map((entry) => entry.session!)],
      benchFeed,
      outputs,
      settings,
    ).catch((error: Error) => {
      throw new OptimizationError(`the benchmark failed: ${error.message}`);
    });
    const baseline = times[0] ?? [];
    racing.forEach((entry, index) => {
      entry.times = times[index + 1] ?? [];
      entry.p50Ms = median(entry.times);
      entry.winRate = winRate(entry.times, baseline);
    });
    const originalP50 = median(baseline);
    const allowLossy = manifest.optimize?.allowLossy ?? [];
    const selectedKind = selectVariant(
      version.target,
      racing.map((entry) => ({
        kind: entry.candidate.kind,
        passed: true,
        lossless: entry.lossless === true,
        p50Ms: entry.p50Ms,
        winRate: entry.winRate,
      })),
      originalP50,
      {
        minSpeedup: settings.minSpeedup,
        minWinRate: settings.minWinRate,
        pinOriginal: manifest.pinOriginal ?? false,
        allowLossy,
      },
    );
    const selected = built.find((entry) => entry.candidate.kind === selectedKind);

    const variants: Variant[] = [
      {
        kind: ORIGINAL_VARIANT,
        bytes: version.artifact.bytes,
        selected: selected === undefined,
        artifact: version.artifact,
        detail: manifest.pinOriginal ? "pinned by maas.json (pinOriginal)" : "the upload as registered",
        p50Ms: registryNumber(originalP50),
        benchmarkRuns: settings.benchmarkRuns,
        loadMs: registryNumber(originalLoadMs),
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
        detail: registryMessage(`${entry.candidate.detail}; ${describeLoss(entry)}`),
        ...(artifact ? { artifact } : {}),
        // Only a racing entry has times, and so its figures.
        ...(entry.times.length > 0
          ? {
              p50Ms: registryNumber(entry.p50Ms!),
              benchmarkRuns: entry.times.length,
              winRate: registryNumber(entry.winRate!),
            }
          : {}),
        ...(entry.loadMs === undefined ? {} : { loadMs: registryNumber(entry.loadMs) }),
        ...(entry.parity ? { parity: storableParity(entry.parity) } : {}),
        ...(entry.error === undefined ? {} : { error: registryMessage(entry.error) }),
      });
    }
    return {
      selected: selected?.candidate.kind ?? ORIGINAL_VARIANT,
      by: selected?.candidate.lossy ? "manifest" : "optimizer",
      lossless: built.filter((entry) => entry.lossless).map((entry) => entry.candidate.kind),
      variants,
    };
  } finally {
    for (const session of opened) await session.release().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

/** Whether the variant may serve unasked, in words for the record. */
function describeLoss(entry: Built): string {
  if (entry.candidate.lossy)
    return "lossy: serves only when maas.json optimize.allowLossy names it or an operator chooses it";
  if (entry.lossless) return `lossless: outputs within ${LOSSLESS_TOLERANCE} x max(1, |original|)`;
  if (entry.notLossless !== undefined) return `not lossless on the parity inputs: ${entry.notLossless}`;
  return "not compared";
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

/** Texts a text task version's parity inputs are tokenized from: random ids would index past its vocabulary. */
const PARITY_TEXTS = [
  "The quick brown fox jumps over the lazy dog.",
  "Serverless inference keeps costs low when traffic is quiet.",
  "I would not recommend this product to anyone; it broke after a day!",
  "Café déjà vu: naïve résumés, 3 ½ pages, in São Paulo.",
  "What time does the next train to the airport leave?",
  "An excellent, thoughtful and very well written book.",
  "Numbers like 42, 3.14 and 1e-9 tokenize into several pieces.",
  "Short.",
];

/** Parity and benchmark feeds of a text task version, from its own tokenizer on fixed texts. */
async function textParityInputs(version: TextTaskVersion, settings: OptimizerSettings, deps: OptimizerDeps) {
  const { tokenizer: ref, maxLength } = version.task;
  const json = await deps.store.readText(ref.bucket, ref.key);
  if (json === undefined) throw new OptimizationError(`the version's tokenizer (${ref.key}) is missing`);
  const tokenizer = await loadTextTokenizer(json);
  const feed = (rows: number, offset: number) =>
    tokenizerFeeds(
      version.signature,
      tokenizer.encode(
        Array.from(
          { length: rows },
          (_, row) => PARITY_TEXTS[(offset + row) % PARITY_TEXTS.length] as string,
        ),
        maxLength,
      ),
    );
  const feeds = Array.from({ length: settings.parityFeeds }, (_, index) =>
    feed(settings.parityBatch, index * 3),
  );
  return { feeds, benchFeed: feed(settings.benchmarkBatch, 0), source: "generated" as const };
}

async function parityInputs(
  version: ServableVersion,
  manifest: Manifest,
  settings: OptimizerSettings,
  deps: OptimizerDeps,
) {
  try {
    const samples = manifestSampleInputs(manifest, version.signature);
    if (samples !== undefined) return { feeds: samples, benchFeed: samples[0]!, source: "samples" as const };
    if (isTextTask(version)) return await textParityInputs(version, settings, deps);
    const feeds = generateInputs(version.signature, {
      count: settings.parityFeeds,
      batch: settings.parityBatch,
      maxFeedBytes: settings.maxParityFeedBytes,
    });
    const [benchFeed] = generateInputs(version.signature, {
      count: 1,
      batch: settings.benchmarkBatch,
      seed: 7,
      maxFeedBytes: settings.maxParityFeedBytes,
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

function storableParity(parity: VariantParity): VariantParity {
  return {
    ...parity,
    maxAbsDiff: registryNumber(parity.maxAbsDiff),
    maxRelativeDiff: registryNumber(parity.maxRelativeDiff),
    cosine: registryNumber(parity.cosine),
    ...(parity.top1Agreement === undefined ? {} : { top1Agreement: registryNumber(parity.top1Agreement) }),
    ...(parity.reason === undefined ? {} : { reason: registryMessage(parity.reason) }),
  };
}
