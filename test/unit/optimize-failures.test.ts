import { Logger } from "@aws-lambda-powertools/logger";
import { marshall } from "@aws-sdk/util-dynamodb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ModelSignature, ModelVersion } from "#core/model.ts";
import type { DecisionStore } from "#core/optimize/decision.ts";
import type { CandidateRuntime, OptimizerDeps, VariantStore } from "#core/optimize/optimization.ts";
import { MAX_FIGURE, registryMessage, registryNumber } from "#core/optimize/storable.ts";
import type { Manifest } from "#core/registry/manifest.ts";
import { createOptimizeHandler } from "#lambdas/optimize/handler.ts";
import { buildCnnModel } from "../../models/cnn.ts";
import { buildTransformerMlpModel } from "../../models/transformer-mlp.ts";
import {
  kindOf,
  OPTIMIZE_DLQ_ARN,
  type OptimizerBench,
  optimizerDeps,
  recordOf,
  registryWith,
  seedVersion,
  sqsEvent,
  sqsRecord,
  startOptimizerBench,
  steeredRuntime,
  stopOptimizerBench,
} from "../support/optimizer-fixtures.ts";

let bench: OptimizerBench;

beforeAll(async () => {
  bench = await startOptimizerBench("optimize-failures");
});

afterAll(() => stopOptimizerBench(bench));

let counter = 0;
/** A small MLP (one block of 128/512, two weights worth quantizing), other bytes on every call. */
const smallMlp = () =>
  buildTransformerMlpModel({ blocks: 1, width: 128, hidden: 512, seed: 5000 + ++counter });
const silent = new Logger({ logLevel: "SILENT" });
const fail = (what: string) => {
  throw new Error(`simulated ${what} failure`);
};

/** The store, runtime, decisions or registry with one step failing. */
interface Injection {
  readonly store?: (real: VariantStore) => VariantStore;
  readonly decisions?: (real: DecisionStore) => DecisionStore;
  readonly runtime?: (real: CandidateRuntime) => CandidateRuntime;
  readonly registry?: (real: OptimizerDeps["registry"]) => OptimizerDeps["registry"];
  readonly signature?: ModelSignature;
  readonly manifest?: Manifest;
}

/** A session of `kind` whose runs throw once it has run `after` times. */
const runsFail = (kind: string, after: number) => (real: CandidateRuntime) => {
  let runs = 0;
  return steeredRuntime(real, {
    outputs: (opened, outputs) => {
      if (opened === kind && ++runs > after) fail(`${kind} run`);
      return outputs;
    },
  });
};

const opensFail = (kind: string) => (real: CandidateRuntime) => ({
  optimizeGraph: real.optimizeGraph.bind(real),
  open: (path: string) =>
    kindOf(path) === kind ? Promise.reject(new Error(`simulated ${kind} load failure`)) : real.open(path),
});

/**
 * Each step of optimization failing, and how the version must end up. "retried": an infrastructure
 * error, thrown to SQS on the first two receives and recorded on the third (the last). "recorded": a
 * model problem, recorded at once. "variant": one variant fails; the optimization still finishes.
 */
const steps: [string, Injection, "retried" | "recorded" | "variant", RegExp][] = [
  [
    "download",
    { store: (real) => ({ ...bind(real), download: () => fail("download") }) },
    "retried",
    /download failure/,
  ],
  [
    "manifest read",
    { store: (real) => ({ ...bind(real), readText: () => fail("manifest read") }) },
    "retried",
    /manifest read failure/,
  ],
  [
    "decision read",
    { decisions: (real) => ({ putOnce: real.putOnce.bind(real), read: () => fail("decision read") }) },
    "retried",
    /decision read failure/,
  ],
  [
    "original load",
    { runtime: opensFail("original") },
    "recorded",
    /onnxruntime cannot load the original: simulated/,
  ],
  [
    "parity input generation",
    {
      signature: {
        inputs: [{ name: "input", datatype: "FP32", shape: [2 ** 31 - 1, 2 ** 31 - 1] }],
        outputs: [{ name: "output", datatype: "FP32", shape: [-1, 128] }],
      },
    },
    "recorded",
    /input 'input' declares shape \[2147483647,2147483647\] .* limited to 67108864 bytes per feed/,
  ],
  [
    "original run",
    { runtime: runsFail("original", 0) },
    "recorded",
    /the original fails on the parity inputs/,
  ],
  [
    "variant build",
    {
      runtime: (real) => ({ open: real.open.bind(real), optimizeGraph: () => fail("graph build") }),
    },
    "variant",
    /^graph-extended: simulated graph build failure$/,
  ],
  [
    "variant load",
    { runtime: opensFail("graph-extended") },
    "variant",
    /graph-extended: simulated graph-extended load/,
  ],
  [
    "variant run",
    { runtime: runsFail("graph-extended", 0) },
    "variant",
    /graph-extended: simulated graph-extended run/,
  ],
  // Four parity feeds first: the fifth run is the benchmark's.
  [
    "benchmark",
    { runtime: runsFail("original", 4) },
    "recorded",
    /the benchmark failed: simulated original run/,
  ],
  [
    "putArtifact",
    { store: (real) => ({ ...bind(real), putArtifact: () => fail("putArtifact") }) },
    "retried",
    /putArtifact failure/,
  ],
  [
    "decision write",
    { decisions: (real) => ({ read: real.read.bind(real), putOnce: () => fail("decision write") }) },
    "retried",
    /decision write failure/,
  ],
  [
    "registry write",
    {
      registry: (real) =>
        registryWith(real, {
          updateVersion: (name, version, expected, changes) =>
            changes.variants === undefined
              ? real.updateVersion(name, version, expected, changes)
              : Promise.reject(new Error("simulated registry write failure")),
        }),
    },
    "retried",
    /registry write failure/,
  ],
];

function bind(store: VariantStore): VariantStore {
  return {
    download: store.download.bind(store),
    readText: store.readText.bind(store),
    putArtifact: store.putArtifact.bind(store),
  };
}

function injected(injection: Injection): OptimizerDeps {
  const base = optimizerDeps(bench);
  return {
    ...base,
    store: injection.store?.(base.store) ?? base.store,
    decisions: injection.decisions?.(base.decisions) ?? base.decisions,
    runtime: injection.runtime?.(base.runtime) ?? base.runtime,
    registry: injection.registry?.(base.registry) ?? base.registry,
  };
}

describe("a failure at each step of optimization", () => {
  it.each(steps)(
    "%s: ends ready, never optimizing, with the failure recorded",
    async (step, injection, kind, pattern) => {
      const name = `fail-${step.replaceAll(" ", "-").toLowerCase()}`;
      await seedVersion(bench, name, smallMlp(), {
        ...(injection.signature ? { signature: injection.signature } : {}),
        ...(injection.manifest ? { manifest: injection.manifest } : {}),
      });
      const handler = createOptimizeHandler(injected(injection), silent, { maxReceives: 3 });
      const body = JSON.stringify({ name, version: 1 });

      const states: ModelVersion[] = [];
      const failures: number[] = [];
      for (const receives of [1, 2, 3]) {
        const response = await handler(sqsEvent(sqsRecord(body, { receives })));
        failures.push(response.batchItemFailures.length);
        states.push(await recordOf(bench, name));
        if (failures.at(-1) === 0) break;
      }

      for (const state of states) expect(state.status).toBe("ready");
      const final = states.at(-1)!;
      expect(final.optimizedAt).toEqual(expect.any(String));
      if (kind === "retried") {
        expect(failures).toEqual([1, 1, 0]);
        expect(states[0]?.optimizedAt).toBeUndefined();
        expect(final.optimizeError).toMatch(/^optimization did not finish after 3 attempts: /);
        expect(final.optimizeError).toMatch(pattern);
        expect(final.variants).toEqual([]);
      } else if (kind === "recorded") {
        expect(failures).toEqual([0]);
        expect(final.optimizeError).toMatch(pattern);
        expect(final.variants).toEqual([]);
      } else {
        expect(failures).toEqual([0]);
        expect(final.optimizeError).toBeUndefined();
        const broken = final.variants.find((variant) => variant.kind === "graph-extended");
        expect(broken).toMatchObject({ selected: false, error: expect.stringMatching(pattern) });
        expect(final.variants.find((variant) => variant.selected)?.kind).toBe("original");
      }
    },
  );
});

describe("values the registry cannot store", () => {
  it("are made storable: finite, within ±1e15, 7 significant digits", () => {
    const values = [
      1e125,
      -1e300,
      Number.POSITIVE_INFINITY,
      Number.NEGATIVE_INFINITY,
      Number.NaN,
      1e-130,
      0.123456789,
    ];

    const stored = values.map(registryNumber);

    expect(stored).toEqual([MAX_FIGURE, -MAX_FIGURE, MAX_FIGURE, -MAX_FIGURE, 0, 0, 0.1234568]);
    expect(() => marshall({ stored })).not.toThrow();
    expect(() => marshall({ raw: 1e125 })).toThrow(/MAX_SAFE_INTEGER/);
    expect(registryMessage("x".repeat(5000))).toHaveLength(1000);
  });

  it("a SageMaker-target variant whose outputs are infinite is recorded, not crashed on", async () => {
    const name = "gpu-infinite";
    await seedVersion(bench, name, buildCnnModel({ seed: 77 }), { target: "sagemaker" });
    // FP16 overflow: one element of each of its outputs comes back infinite, another NaN.
    const overflowing = steeredRuntime(bench.runtime, {
      outputs: (kind, outputs) =>
        kind !== "fp16"
          ? outputs
          : outputs.map((tensor) => {
              const data = Float32Array.from(tensor.data as Float32Array);
              data[0] = Number.POSITIVE_INFINITY;
              data[1] = Number.NaN;
              return { ...tensor, data };
            }),
    });
    const handler = createOptimizeHandler(optimizerDeps(bench, {}, { runtime: overflowing }), silent);

    const response = await handler(sqsEvent(sqsRecord(JSON.stringify({ name, version: 1 }))));

    expect(response.batchItemFailures).toEqual([]);
    const optimized = await recordOf(bench, name);
    expect(optimized.status).toBe("ready");
    expect(optimized.optimizeError).toBeUndefined();
    const fp16 = optimized.variants.find((variant) => variant.kind === "fp16");
    expect(fp16?.parity).toMatchObject({ passed: false, maxAbsDiff: MAX_FIGURE });
  });
});

describe("the optimize dead-letter queue", () => {
  const handler = () =>
    createOptimizeHandler(optimizerDeps(bench), silent, {
      maxReceives: 3,
      deadLetterQueueArn: OPTIMIZE_DLQ_ARN,
    });
  const deadLetter = (name: string, messageId = "message-1") =>
    sqsEvent(
      sqsRecord(JSON.stringify({ name, version: 1 }), { messageId, receives: 1, source: OPTIMIZE_DLQ_ARN }),
    );

  it("ends a version its attempts left optimizing: ready, with the last error", async () => {
    const name = "dlq-stuck";
    await seedVersion(bench, name, smallMlp());
    await bench.registry.updateVersion(name, 1, "ready", {
      status: "optimizing",
      optimizeAttempt: { id: "message-1", startedAt: new Date().toISOString(), error: "Task timed out" },
    });

    const response = await handler()(deadLetter(name));

    expect(response.batchItemFailures).toEqual([]);
    expect(await recordOf(bench, name)).toMatchObject({
      status: "ready",
      optimizeError: "optimization did not finish after 3 attempts: Task timed out",
      optimizedAt: expect.any(String),
      variants: [],
    });
  });

  it("ends a version that was never optimized, saying no error was recorded", async () => {
    const name = "dlq-never";
    await seedVersion(bench, name, smallMlp());

    await handler()(deadLetter(name));

    expect((await recordOf(bench, name)).optimizeError).toBe(
      "optimization did not finish after 3 attempts: no error was recorded (the function timed out or its process ended)",
    );
  });

  it("leaves alone a version already optimized", async () => {
    const done = "dlq-done";
    await seedVersion(bench, done, smallMlp());
    await bench.registry.updateVersion(done, 1, "ready", { optimizedAt: "2026-01-01T00:00:00Z" });
    const before = await recordOf(bench, done);

    const response = await handler()(deadLetter(done));

    expect(response.batchItemFailures).toEqual([]);
    expect(await recordOf(bench, done)).toEqual(before);
  });

  it("retries, rather than races, a live attempt of another message; ends it once that claim's lease is out", async () => {
    const live = "dlq-live";
    await seedVersion(bench, live, smallMlp());
    const startedAt = new Date().toISOString();
    const claim = { id: "message-other", startedAt };
    await bench.registry.updateVersion(live, 1, "ready", { status: "optimizing", optimizeAttempt: claim });
    const later = new Date(Date.parse(startedAt) + 16 * 60 * 1000).toISOString();
    const afterLease = createOptimizeHandler(optimizerDeps(bench, {}, { now: () => later }), silent, {
      deadLetterQueueArn: OPTIMIZE_DLQ_ARN,
    });

    const whileLive = await handler()(deadLetter(live));
    const stateWhileLive = await recordOf(bench, live);
    const onceExpired = await afterLease(deadLetter(live));

    expect(whileLive.batchItemFailures).toEqual([{ itemIdentifier: "message-1" }]);
    expect(stateWhileLive).toMatchObject({ status: "optimizing", optimizeAttempt: claim });
    expect(onceExpired.batchItemFailures).toEqual([]);
    expect(await recordOf(bench, live)).toMatchObject({
      status: "ready",
      optimizeError: expect.stringMatching(
        /^optimization did not finish after 3 attempts: no error was recorded/,
      ),
    });
  });

  it("optimizes records from the work queue as before when it knows the dead-letter queue", async () => {
    const name = "dlq-work";
    await seedVersion(bench, name, smallMlp());

    await handler()(sqsEvent(sqsRecord(JSON.stringify({ name, version: 1 }))));

    expect(await recordOf(bench, name)).toMatchObject({ status: "ready", variants: expect.any(Array) });
    expect((await recordOf(bench, name)).variants.length).toBeGreaterThan(0);
  });
});
