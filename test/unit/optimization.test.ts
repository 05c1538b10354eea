import { Logger } from "@aws-lambda-powertools/logger";
import { GetObjectCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ModelVersion, servingArtifact, type Variant } from "#core/model.ts";
import { type DecisionStore, decisionKey, parseDecision } from "#core/optimize/decision.ts";
import {
  type OptimizerDeps,
  type OptimizerSettings,
  optimizeVersion,
  type VariantStore,
} from "#core/optimize/optimization.ts";
import { selectKind, selectVariant } from "#core/optimize/selection.ts";
import { artifactKey, type Manifest, parseManifest } from "#core/registry/manifest.ts";
import { isServable } from "#core/registry/registry.ts";
import { createOptimizeHandler, loadOptimizeConfig, optimizerSettings } from "#lambdas/optimize/handler.ts";
import { buildCnnModel } from "../../models/cnn.ts";
import { buildTransformerMlpModel } from "../../models/transformer-mlp.ts";
import { buildDatatypeZooModel } from "../../models/zoo.ts";
import {
  BUCKET,
  MemoryDecisionStore,
  type OptimizerBench,
  optimizerDeps,
  recordOf,
  seedVersion,
  sha256,
  sqsEvent,
  sqsRecord,
  startOptimizerBench,
  steeredRuntime,
  stopOptimizerBench,
} from "../support/optimizer-fixtures.ts";

let bench: OptimizerBench;

beforeAll(async () => {
  bench = await startOptimizerBench("optimization");
});

afterAll(() => stopOptimizerBench(bench));

let counter = 0;
const uniqueName = (prefix: string) => `${prefix}-${++counter}`;
/**
 * Two blocks of 256/1024: 4 MB, four weights worth quantizing, and fast to benchmark. Each call makes
 * other bytes (decisions are kept by sha256: a test that must measure needs bytes of its own).
 */
const freshMlp = () =>
  buildTransformerMlpModel({ blocks: 2, width: 256, hidden: 1024, seed: 1000 + ++counter });

const seed = (name: string, bytes: Uint8Array, options?: Parameters<typeof seedVersion>[3]) =>
  seedVersion(bench, name, bytes, options);
const deps = (settings?: Partial<OptimizerSettings>, overrides?: Partial<OptimizerDeps>) =>
  optimizerDeps(bench, settings, overrides);
const record = (name: string, version = 1) => recordOf(bench, name, version);

const kinds = (variants: readonly Variant[]) => variants.map((variant) => variant.kind);
const selectedOf = (version: ModelVersion) => version.variants.find((variant) => variant.selected);
/** int8 runs at once and everything else waits: int8 is the fastest by far. */
const int8Fastest = () =>
  steeredRuntime(bench.runtime, { delayMs: (kind) => (kind === "int8-dynamic" ? 0 : 6) });
const ALLOW_INT8: Manifest = { optimize: { allowLossy: ["int8-dynamic"] } };

async function storedDecision(version: ModelVersion) {
  const sha = version.artifact!.sha256;
  const { Contents } = await bench.s3.send(
    new ListObjectsV2Command({ Bucket: BUCKET, Prefix: `artifacts/sha256/${sha}.optimization-` }),
  );
  const keys = (Contents ?? []).map((object) => object.Key!);
  const texts = await Promise.all(
    keys.map(async (key) => {
      const { Body } = await bench.s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
      return Body!.transformToString();
    }),
  );
  return { keys, decisions: texts.map((text) => JSON.parse(text) as Record<string, unknown>) };
}

describe("selectVariant", () => {
  const original = 10;
  const graph = { kind: "graph-extended", passed: true, lossless: true };
  const int8 = { kind: "int8-dynamic", passed: true, lossless: false };

  it("picks the fastest lossless variant that passed the gate", () => {
    const candidates = [
      { ...graph, p50Ms: 9 },
      { ...graph, kind: "graph-other", p50Ms: 8 },
    ];

    expect(selectVariant("lambda", candidates, original, { minSpeedup: 0.05 })).toBe("graph-other");
  });

  it("never picks a lossy variant unasked, however fast", () => {
    const candidates = [
      { ...graph, p50Ms: 9 },
      { ...int8, p50Ms: 1 },
    ];

    expect(selectVariant("lambda", candidates, original, { minSpeedup: 0.05 })).toBe("graph-extended");
    expect(selectVariant("lambda", [{ ...int8, p50Ms: 1 }], original, { minSpeedup: 0.05 })).toBeUndefined();
  });

  it("picks a lossy variant whose kind the manifest allows when it is the fastest", () => {
    const candidates = [
      { ...graph, p50Ms: 9 },
      { ...int8, p50Ms: 4 },
    ];
    const options = { minSpeedup: 0.05, allowLossy: ["int8-dynamic"] };

    expect(selectVariant("lambda", candidates, original, options)).toBe("int8-dynamic");
    expect(selectVariant("lambda", candidates, original, { ...options, allowLossy: ["fp16"] })).toBe(
      "graph-extended",
    );
  });

  it("never picks a variant that failed the gate, however fast", () => {
    const candidates = [
      { ...graph, p50Ms: 9 },
      { ...graph, kind: "graph-broken", passed: false, p50Ms: 1 },
    ];

    expect(selectVariant("lambda", candidates, original, { minSpeedup: 0.05 })).toBe("graph-extended");
  });

  it("keeps the original when no variant beats it by the minimum speed-up", () => {
    const candidates = [{ ...graph, p50Ms: 9.6 }];

    expect(selectVariant("lambda", candidates, original, { minSpeedup: 0.05 })).toBeUndefined();
  });

  it("keeps the original when a better p50 won too few interleaved rounds to be more than noise", () => {
    const candidates = [{ ...graph, p50Ms: 7, winRate: 0.55 }];

    expect(
      selectVariant("lambda", candidates, original, { minSpeedup: 0.05, minWinRate: 0.75 }),
    ).toBeUndefined();
    expect(
      selectVariant("lambda", [{ ...candidates[0]!, winRate: 0.9 }], original, {
        minSpeedup: 0.05,
        minWinRate: 0.75,
      }),
    ).toBe("graph-extended");
  });

  it("keeps the original when the manifest pins it", () => {
    const candidates = [{ ...graph, p50Ms: 1 }];

    expect(
      selectVariant("lambda", candidates, original, { minSpeedup: 0.05, pinOriginal: true }),
    ).toBeUndefined();
  });

  it("selects nothing for a GPU target, whose endpoint serves the original upload", () => {
    const candidates = [
      { ...graph, kind: "graph-basic", p50Ms: 5 },
      { ...int8, kind: "fp16", p50Ms: 3 },
    ];

    expect(
      selectVariant("sagemaker", candidates, original, { minSpeedup: 0.05, allowLossy: ["fp16"] }),
    ).toBeUndefined();
  });
});

describe("selectKind (an operator's choice)", () => {
  const variants: Variant[] = [
    {
      kind: "original",
      bytes: 10,
      selected: false,
      artifact: { bucket: "b", key: "k", sha256: "a", bytes: 10 },
    },
    {
      kind: "graph-extended",
      bytes: 10,
      selected: true,
      artifact: { bucket: "b", key: "g", sha256: "g", bytes: 10 },
    },
    { kind: "int8-dynamic", bytes: 3, selected: false, error: "could not load" },
    {
      kind: "fp16",
      bytes: 5,
      selected: false,
      artifact: { bucket: "b", key: "h", sha256: "h", bytes: 5 },
      parity: { passed: false, maxAbsDiff: 1, maxRelativeDiff: 1, cosine: 0.5, inputs: "generated" },
    },
  ];

  it("selects the chosen kind and only it", () => {
    expect(selectKind(variants, "original").map((variant) => variant.selected)).toEqual([
      true,
      false,
      false,
      false,
    ]);
    expect(selectKind(variants, "graph-extended").map((variant) => variant.selected)).toEqual([
      false,
      true,
      false,
      false,
    ]);
  });

  it("falls back to the original when the chosen kind failed, missed the gate or was never built", () => {
    for (const kind of ["int8-dynamic", "fp16", "graph-basic"]) {
      expect(selectKind(variants, kind).map((variant) => variant.selected)).toEqual([
        true,
        false,
        false,
        false,
      ]);
    }
  });
});

describe("the manifest's optimize settings", () => {
  it("accepts a list of lossy kinds to allow", () => {
    expect(parseManifest('{"optimize":{"allowLossy":["int8-dynamic"]}}')).toEqual(ALLOW_INT8);
  });

  it("rejects kinds that are not lossy variants, unknown keys, and a contradiction with pinOriginal", () => {
    expect(() => parseManifest('{"optimize":{"allowLossy":["graph-extended"]}}')).toThrow(
      /optimize.allowLossy\[0\]/,
    );
    expect(() => parseManifest('{"optimize":{"allowLossy":[],"speed":"max"}}')).toThrow(/optimize/);
    expect(() => parseManifest('{"pinOriginal":true,"optimize":{"allowLossy":["int8-dynamic"]}}')).toThrow(
      "maas.json is invalid: optimize.allowLossy: pinOriginal and optimize.allowLossy contradict each other: keep one",
    );
  });
});

describe("optimizeVersion", () => {
  it("records every variant with its figures and whether it is lossless, and serves a lossless one", async () => {
    const name = uniqueName("mlp");
    const bytes = freshMlp();
    const seeded = await seed(name, bytes);

    const result = await optimizeVersion({ name, version: 1 }, "message-1", deps());

    expect(result).toMatchObject({ outcome: "optimized", reused: false });
    const optimized = await record(name);
    expect(optimized).toMatchObject({ status: "ready", optimizedAt: expect.any(String) });
    expect(optimized.optimizeError).toBeUndefined();
    expect(kinds(optimized.variants)).toEqual(["original", "graph-extended", "int8-dynamic"]);
    for (const variant of optimized.variants) {
      expect(variant.bytes).toBeGreaterThan(0);
      expect(variant.p50Ms).toBeGreaterThan(0);
      expect(variant.benchmarkRuns).toBe(5);
      if (variant.kind !== "original") expect(variant.winRate).toBeGreaterThanOrEqual(0);
      expect(variant.artifact?.key).toBe(artifactKey(variant.artifact!.sha256));
    }
    const [originalVariant, graph, int8] = optimized.variants;
    expect(originalVariant?.artifact).toEqual(seeded.artifact);
    expect(graph?.parity).toMatchObject({ passed: true, inputs: "generated" });
    expect(graph?.detail).toMatch(/; lossless: outputs within 0.00001 x max\(1, \|original\|\)$/);
    expect(int8?.parity).toMatchObject({ passed: true, inputs: "generated" });
    expect(int8?.detail).toMatch(/; lossy: serves only when maas.json optimize.allowLossy names it/);
    expect(int8!.bytes / bytes.byteLength).toBeLessThan(0.3);
    const selected = optimized.variants.filter((variant) => variant.selected);
    expect(selected).toHaveLength(1);
    expect(["original", "graph-extended"]).toContain(selected[0]?.kind);
    expect(result.outcome === "optimized" && result.selected).toBe(selected[0]?.kind);
    expect(optimized.variantChoice).toBeUndefined();
    if (!isServable(optimized)) throw new Error("not servable");
    expect(servingArtifact(optimized)).toEqual(selected[0]?.artifact);
    const { decisions } = await storedDecision(optimized);
    expect(decisions).toHaveLength(1);
    expect(decisions[0]).toMatchObject({
      sha256: sha256(bytes),
      selected: selected[0]?.kind,
      by: "optimizer",
      lossless: ["graph-extended"],
    });
  });

  it("never serves int8 without the manifest's say, even when it is by far the fastest", async () => {
    const name = uniqueName("mlp-int8-unasked");
    await seed(name, freshMlp());

    const result = await optimizeVersion(
      { name, version: 1 },
      "message-1",
      deps({}, { runtime: int8Fastest() }),
    );

    const optimized = await record(name);
    const int8 = optimized.variants.find((variant) => variant.kind === "int8-dynamic")!;
    expect(int8.parity?.passed).toBe(true);
    expect(int8.p50Ms).toBeLessThan(optimized.variants[0]!.p50Ms! / 2);
    expect(int8.selected).toBe(false);
    expect(result.outcome === "optimized" && result.selected).not.toBe("int8-dynamic");
    expect(optimized.variantChoice).toBeUndefined();
  });

  it("serves int8 when the manifest allows it and it is the fastest, recording the manifest's choice", async () => {
    const name = uniqueName("mlp-int8-allowed");
    await seed(name, freshMlp(), { manifest: ALLOW_INT8 });

    const result = await optimizeVersion(
      { name, version: 1 },
      "message-1",
      deps({}, { runtime: int8Fastest() }),
    );

    const optimized = await record(name);
    expect(result).toMatchObject({ outcome: "optimized", selected: "int8-dynamic" });
    expect(selectedOf(optimized)?.kind).toBe("int8-dynamic");
    expect(optimized.variantChoice).toEqual({ kind: "int8-dynamic", by: "manifest", at: expect.any(String) });
    if (!isServable(optimized)) throw new Error("not servable");
    expect(servingArtifact(optimized)).toEqual(selectedOf(optimized)?.artifact);
  });

  it("keeps an operator's choice made before the optimization finished", async () => {
    const chose = (kind: string) => ({
      variantChoice: { kind, by: "operator" as const, at: "2026-01-01T00:00:00Z" },
    });
    const keepsOriginal = uniqueName("mlp-operator-original");
    const wantsInt8 = uniqueName("mlp-operator-int8");
    await seed(keepsOriginal, freshMlp(), { manifest: ALLOW_INT8, changes: chose("original") });
    await seed(wantsInt8, freshMlp(), { changes: chose("int8-dynamic") });

    await optimizeVersion({ name: keepsOriginal, version: 1 }, "m", deps({}, { runtime: int8Fastest() }));
    await optimizeVersion({ name: wantsInt8, version: 1 }, "m", deps({}, { runtime: int8Fastest() }));

    const original = await record(keepsOriginal);
    const int8 = await record(wantsInt8);
    expect(selectedOf(original)?.kind).toBe("original");
    expect(original.variantChoice).toEqual(chose("original").variantChoice);
    expect(selectedOf(int8)?.kind).toBe("int8-dynamic");
    expect(int8.variantChoice).toEqual(chose("int8-dynamic").variantChoice);
  });

  it("serves the same variant for the same bytes every time: two models, two versions each", async () => {
    const bytes = freshMlp();
    // Timing that flips between optimizations: graph-extended wins one, the original the next.
    let optimizations = 0;
    let graphBuilds = 0;
    const flipping = () =>
      steeredRuntime(bench.runtime, {
        onOpen: (kind) => {
          if (kind === "original") optimizations++;
        },
        onOptimizeGraph: () => graphBuilds++,
        delayMs: (kind) => {
          const graphWins = optimizations % 2 === 1;
          if (kind === "graph-extended") return graphWins ? 0 : 8;
          return kind === "original" ? (graphWins ? 8 : 0) : 12;
        },
      });
    const names = [uniqueName("twin-a"), uniqueName("twin-b")];
    const published: { name: string; version: number }[] = [];
    for (const name of names) {
      for (const version of [1, 2]) {
        await seed(name, bytes, { version });
        published.push({ name, version });
      }
    }

    const outcomes = [];
    for (const target of published)
      outcomes.push(await optimizeVersion(target, "m", deps({}, { runtime: flipping() })));

    const served = await Promise.all(
      published.map(async ({ name, version }) => {
        const optimized = await record(name, version);
        if (!isServable(optimized)) throw new Error("not servable");
        return { kind: selectedOf(optimized)?.kind, artifact: servingArtifact(optimized) };
      }),
    );
    expect(served[0]?.kind).toBe("graph-extended");
    for (const each of served) expect(each).toEqual(served[0]);
    expect(outcomes.map((outcome) => outcome.outcome === "optimized" && outcome.reused)).toEqual([
      false,
      true,
      true,
      true,
    ]);
    expect(graphBuilds).toBe(1);
  });

  it("would serve those bytes differently from one version to the next without the decision store", async () => {
    const bytes = freshMlp();
    let optimizations = 0;
    const flipping = steeredRuntime(bench.runtime, {
      onOpen: (kind) => {
        if (kind === "original") optimizations++;
      },
      delayMs: (kind) => {
        const graphWins = optimizations % 2 === 1;
        if (kind === "graph-extended") return graphWins ? 0 : 8;
        return kind === "original" ? (graphWins ? 8 : 0) : 12;
      },
    });
    const forgetful: DecisionStore = { read: async () => undefined, putOnce: async () => true };
    const name = uniqueName("forgetful");
    await seed(name, bytes, { version: 1 });
    await seed(name, bytes, { version: 2 });

    await optimizeVersion({ name, version: 1 }, "m", deps({}, { runtime: flipping, decisions: forgetful }));
    await optimizeVersion({ name, version: 2 }, "m", deps({}, { runtime: flipping, decisions: forgetful }));

    expect(selectedOf(await record(name, 1))?.kind).toBe("graph-extended");
    expect(selectedOf(await record(name, 2))?.kind).toBe("original");
  });

  it("adopts the decision another optimization of the same bytes recorded first", async () => {
    const bytes = freshMlp();
    const decisions = new MemoryDecisionStore();
    const first = uniqueName("race-first");
    const second = uniqueName("race-second");
    await seed(first, bytes);
    await seed(second, bytes);
    const graphFast = steeredRuntime(bench.runtime, {
      delayMs: (kind) => (kind === "graph-extended" ? 0 : 8),
    });
    const originalFast = steeredRuntime(bench.runtime, { delayMs: (kind) => (kind === "original" ? 0 : 8) });
    await optimizeVersion({ name: first, version: 1 }, "m", deps({}, { runtime: graphFast, decisions }));
    // The second started before the first recorded: it finds nothing, measures, and loses the write.
    let reads = 0;
    const late: DecisionStore = {
      read: async (bucket, key) => (reads++ === 0 ? undefined : decisions.read(bucket, key)),
      putOnce: (bucket, key, text) => decisions.putOnce(bucket, key, text),
    };

    const result = await optimizeVersion(
      { name: second, version: 1 },
      "m",
      deps({}, { runtime: originalFast, decisions: late }),
    );

    expect(result).toMatchObject({ outcome: "optimized", selected: "graph-extended", reused: true });
    expect(selectedOf(await record(second))?.kind).toBe("graph-extended");
  });

  it("decides again when the settings that decide differ, keeping each decision apart", async () => {
    const bytes = freshMlp();
    const plain = uniqueName("settings-plain");
    const allowed = uniqueName("settings-allowed");
    await seed(plain, bytes);
    await seed(allowed, bytes, { manifest: ALLOW_INT8 });

    await optimizeVersion({ name: plain, version: 1 }, "m", deps({}, { runtime: int8Fastest() }));
    await optimizeVersion({ name: allowed, version: 1 }, "m", deps({}, { runtime: int8Fastest() }));

    expect(selectedOf(await record(plain))?.kind).not.toBe("int8-dynamic");
    expect(selectedOf(await record(allowed))?.kind).toBe("int8-dynamic");
    const { keys } = await storedDecision(await record(plain));
    expect(keys).toHaveLength(2);
  });

  it("reads a stored decision only for the bytes and settings it names", async () => {
    const name = uniqueName("decision-check");
    const bytes = freshMlp();
    await seed(name, bytes);
    await optimizeVersion({ name, version: 1 }, "m", deps());
    const { keys, decisions } = await storedDecision(await record(name));
    const text = JSON.stringify(decisions[0]);
    const digest = decisions[0]!.settingsDigest as string;

    expect(keys[0]).toBe(decisionKey(sha256(bytes), digest));
    expect(parseDecision(text, { sha256: sha256(bytes), settingsDigest: digest }).sha256).toBe(sha256(bytes));
    expect(() => parseDecision(text, { sha256: "0".repeat(64), settingsDigest: digest })).toThrow(
      /for other bytes or settings/,
    );
    expect(() => parseDecision("{", { sha256: sha256(bytes), settingsDigest: digest })).toThrow(/not JSON/);
  });

  it("records a variant that fails the gate with its figures and never selects it", async () => {
    const name = uniqueName("mlp-strict");
    await seed(name, freshMlp());
    const strict = { ...optimizerDeps(bench).settings.thresholds, maxAbsDiff: 1e-3 };

    await optimizeVersion({ name, version: 1 }, "message-1", deps({ thresholds: strict }));

    const int8 = (await record(name)).variants.find((variant) => variant.kind === "int8-dynamic");
    expect(int8).toMatchObject({
      selected: false,
      parity: { passed: false, reason: expect.stringMatching(/^max abs diff .* > 0.001$/) },
      artifact: expect.any(Object),
    });
    expect(int8?.p50Ms).toBeUndefined();
  });

  it("keeps the original when the manifest pins it, still recording the variants", async () => {
    const name = uniqueName("mlp-pinned");
    await seed(name, freshMlp(), { manifest: { pinOriginal: true } });

    const result = await optimizeVersion({ name, version: 1 }, "message-1", deps());

    const variants = (await record(name)).variants;
    expect(result).toMatchObject({ outcome: "optimized", selected: "original" });
    expect(variants.map((variant) => [variant.kind, variant.selected])).toEqual([
      ["original", true],
      ["graph-extended", false],
      ["int8-dynamic", false],
    ]);
    expect(variants[0]?.detail).toMatch(/pinOriginal/);
  });

  it("runs the gate on the manifest's samples when it has them", async () => {
    const name = uniqueName("mlp-samples");
    const sample = (seed: number) => ({
      inputs: [
        {
          name: "input",
          shape: [1, 256],
          datatype: "FP32",
          data: Array.from({ length: 256 }, (_, i) => Math.sin(i * seed)),
        },
      ],
    });
    await seed(name, freshMlp(), { manifest: { samples: [sample(1), sample(2)] } });

    await optimizeVersion({ name, version: 1 }, "message-1", deps());

    const int8 = (await record(name)).variants.find((variant) => variant.kind === "int8-dynamic");
    expect(int8?.parity).toMatchObject({ inputs: "samples", top1Rows: 2 });
  });

  it("does nothing for a replayed message once the version is optimized", async () => {
    const name = uniqueName("mlp-replay");
    await seed(name, freshMlp());
    await optimizeVersion({ name, version: 1 }, "message-1", deps());
    const first = await record(name);

    const replay = await optimizeVersion({ name, version: 1 }, "message-2", deps());
    const redelivery = await optimizeVersion({ name, version: 1 }, "message-1", deps());

    expect(replay.outcome).toBe("duplicate");
    expect(redelivery.outcome).toBe("duplicate");
    expect(await record(name)).toEqual(first);
  });

  it("lets a redelivery of the same message take over the claim its crashed attempt left", async () => {
    const name = uniqueName("mlp-crashed");
    await seed(name, freshMlp());
    const crashed = { id: "message-1", startedAt: new Date().toISOString() };
    await bench.registry.updateVersion(name, 1, "ready", { status: "optimizing", optimizeAttempt: crashed });

    const duplicate = await optimizeVersion({ name, version: 1 }, "message-2", deps());
    const stillOptimizing = await record(name);
    const retry = await optimizeVersion({ name, version: 1 }, "message-1", deps());

    expect(duplicate.outcome).toBe("in-progress");
    expect(stillOptimizing).toMatchObject({ status: "optimizing", optimizeAttempt: crashed });
    expect(retry.outcome).toBe("optimized");
    expect(await record(name)).toMatchObject({ status: "ready", optimizedAt: expect.any(String) });
  });

  it("takes over a claim older than the lease, whichever message finds it", async () => {
    const name = uniqueName("mlp-stale");
    await seed(name, freshMlp());
    const longAgo = new Date(Date.now() - 60 * 60 * 1000).toISOString();
    await bench.registry.updateVersion(name, 1, "ready", {
      status: "optimizing",
      optimizeAttempt: { id: "message-1", startedAt: longAgo },
    });

    const result = await optimizeVersion(
      { name, version: 1 },
      "message-9",
      deps({ leaseMs: 15 * 60 * 1000 }),
    );

    expect(result.outcome).toBe("optimized");
    expect((await record(name)).optimizeAttempt?.id).toBe("message-9");
  });

  it("leaves a model it cannot optimize ready on its original, with the reason recorded", async () => {
    const name = uniqueName("zoo");
    const seeded = await seed(name, buildDatatypeZooModel());

    const result = await optimizeVersion({ name, version: 1 }, "message-1", deps());
    const replay = await optimizeVersion({ name, version: 1 }, "message-2", deps());

    expect(result).toMatchObject({ outcome: "failed", reason: expect.stringMatching(/BYTES/) });
    expect(replay.outcome).toBe("duplicate");
    const failed = await record(name);
    expect(failed).toMatchObject({
      status: "ready",
      optimizeError: expect.stringMatching(/maas.json/),
      variants: [],
    });
    if (!isServable(failed)) throw new Error("not servable");
    expect(servingArtifact(failed)).toEqual(seeded.artifact);
  });

  it("returns the version to ready on an infrastructure error and throws, so that the retry completes it", async () => {
    const name = uniqueName("mlp-outage");
    await seed(name, freshMlp());
    let failures = 1;
    const flaky: VariantStore = {
      download: (ref, path) => bench.store.download(ref, path),
      readText: (bucket, key) => bench.store.readText(bucket, key),
      putArtifact: async (bucket, path) => {
        if (failures-- > 0) throw new Error("simulated S3 outage");
        return bench.store.putArtifact(bucket, path);
      },
    };

    await expect(
      optimizeVersion({ name, version: 1 }, "message-1", deps({}, { store: flaky })),
    ).rejects.toThrow("simulated S3 outage");
    const afterFailure = await record(name);
    const retry = await optimizeVersion({ name, version: 1 }, "message-1", deps({}, { store: flaky }));

    expect(afterFailure).toMatchObject({
      status: "ready",
      optimizeAttempt: { error: "simulated S3 outage" },
      variants: [],
    });
    expect(afterFailure.optimizedAt).toBeUndefined();
    expect(retry.outcome).toBe("optimized");
  });

  it("makes and records an FP16 variant for a GPU target, lossy, without selecting it", async () => {
    const name = uniqueName("cnn-gpu");
    await seed(name, buildCnnModel(), {
      target: "sagemaker",
      manifest: { optimize: { allowLossy: ["fp16"] } },
    });

    const result = await optimizeVersion({ name, version: 1 }, "message-1", deps());

    const optimized = await record(name);
    expect(result).toMatchObject({ outcome: "optimized" });
    expect(optimized.optimizeError).toBeUndefined();
    expect(kinds(optimized.variants)).toEqual(["original", "graph-basic", "fp16"]);
    expect(optimized.variants.filter((variant) => variant.selected).map((variant) => variant.kind)).toEqual([
      "original",
    ]);
    const fp16 = optimized.variants[2]!;
    expect(fp16.parity?.passed).toBe(true);
    expect(fp16.detail).toMatch(/; lossy:/);
    expect(fp16.bytes / optimized.variants[0]!.bytes).toBeLessThan(0.55);
  });

  it("ignores a version that is still registering", async () => {
    const name = uniqueName("registering");
    const seeded = await seed(name, freshMlp());
    await bench.registry.updateVersion(name, 1, "ready", { status: "registering" });

    const result = await optimizeVersion({ name, version: 1 }, "message-1", deps());

    expect(result).toMatchObject({ outcome: "ignored", reason: "the version is registering" });
    expect((await record(name)).variants).toEqual(seeded.variants);
  });
});

describe("the optimize function", () => {
  it("optimizes each message and reports a malformed one as a batch item failure", async () => {
    const name = uniqueName("mlp-handler");
    await seed(name, freshMlp());
    const handler = createOptimizeHandler(deps(), new Logger({ logLevel: "SILENT" }));

    const response = await handler(
      sqsEvent(
        sqsRecord("not json", { messageId: "message-0" }),
        sqsRecord(JSON.stringify({ name, version: 1 }), { messageId: "message-1" }),
        sqsRecord('{"name":"x"}', { messageId: "message-2" }),
      ),
    );

    expect(response.batchItemFailures).toEqual([
      { itemIdentifier: "message-0" },
      { itemIdentifier: "message-2" },
    ]);
    expect((await record(name)).optimizedAt).toEqual(expect.any(String));
  });

  it("reads its configuration with defaults, and names every variable that is wrong", () => {
    const config = loadOptimizeConfig({ MAAS_REGISTRY_TABLE: "registry", MAAS_PARITY_MIN_COSINE: "0.995" });
    const settings = optimizerSettings(config);

    expect(settings).toMatchObject({
      workDir: "/tmp/maas-optimize",
      benchmarkRuns: 20,
      minSpeedup: 0.05,
      maxParityFeedBytes: 64 * 1024 ** 2,
      thresholds: { minCosine: 0.995, minTop1Agreement: 0.95, maxRelativeDiff: 0.1 },
      quantize: { minElements: 16_384, reduceRange: process.arch !== "arm64" },
    });
    expect(config.MAAS_OPTIMIZE_MAX_RECEIVES).toBe(3);
    expect(config.MAAS_OPTIMIZE_DEAD_LETTER_QUEUE_ARN).toBeUndefined();
    expect(() => loadOptimizeConfig({ MAAS_PARITY_MIN_COSINE: "2" })).toThrow(
      /invalid optimize function configuration: MAAS_REGISTRY_TABLE: .*; MAAS_PARITY_MIN_COSINE: /,
    );
  });
});
