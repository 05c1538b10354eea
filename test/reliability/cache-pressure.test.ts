/**
 * The artifact cache under eviction pressure, through the local stack: six models whose artifacts
 * together exceed a 70 MiB budget, three concurrent clients round-robin over them, and the cache's
 * directory sampled every few milliseconds. No request may fail, and disk use may never pass the budget.
 */
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mulberry32 } from "#core/tensor/seeded-random.ts";
import type { LocalStack } from "../../local/stack.ts";
import { buildMlpModel } from "../../models/mlp.ts";
import { startTestStack, stopTestStack, TEST_API_KEY } from "../support/local-stack.ts";

const BUDGET_BYTES = 70 * 1024 * 1024;
const CLIENTS = 3;
const REQUESTS = 60;
const INPUT_WIDTH = 64;
const OUTPUT_WIDTH = 16;
/** Two hidden layers each: 15 to 24 MB a model, 116 MB together, at most four fitting the budget at once. */
const HIDDEN_WIDTHS = [1900, 2000, 2100, 2200, 2300, 2400] as const;
const MODELS = HIDDEN_WIDTHS.map((width) => ({
  name: `pressure-${width}`,
  bytes: buildMlpModel({ layers: [INPUT_WIDTH, width, width, OUTPUT_WIDTH], seed: width }),
}));

let stack: LocalStack;
let dataDir: string;

beforeAll(async () => {
  ({ stack, dataDir } = await startTestStack("cache-pressure", {
    demo: false,
    env: {
      MAAS_ARTIFACT_CACHE_BYTES: String(BUDGET_BYTES),
      // Two sessions for six models: each turn of the round-robin loads its model from the cache again.
      MAAS_SESSION_MAX: "2",
      // The optimizer gives up at once on these sizes: no variant benchmarks share the cores with the clients.
      MAAS_OPTIMIZE_MAX_MODEL_BYTES: String(1024 * 1024),
    },
  }));
  for (const model of MODELS) {
    await stack.publish(model.name, 1, model.bytes, { manifest: { pinOriginal: true } });
  }
  // Optimization (given up) writes the records once more; the clients start once those writes are done.
  const deadline = Date.now() + 60_000;
  for (const model of MODELS) {
    while ((await stack.registry.getVersionConsistent(model.name, 1))?.optimizedAt === undefined) {
      if (Date.now() > deadline) throw new Error(`${model.name} never left the optimizer`);
      await sleep(50);
    }
  }
}, 120_000);

afterAll(() => stopTestStack(stack, dataDir));

interface DiskSample {
  readonly bytes: number;
  /** Every name in the directory, part files included. */
  readonly names: readonly string[];
}

/** The cache directory's files and their summed sizes; a file deleted while it is read counts as gone. */
async function sampleDisk(directory: string): Promise<DiskSample> {
  const names = await readdir(directory).catch(() => [] as string[]);
  const sizes = await Promise.all(
    names.map((name) =>
      stat(join(directory, name)).then(
        (found) => found.size,
        () => 0,
      ),
    ),
  );
  return { bytes: sizes.reduce((sum, size) => sum + size, 0), names };
}

/** Samples until `stop` resolves: the largest total seen, the number of samples and every artifact seen. */
async function watchDisk(directory: string, stop: Promise<unknown>) {
  let stopped = false;
  void stop.finally(() => {
    stopped = true;
  });
  let maxBytes = 0;
  let samples = 0;
  const artifactsSeen = new Set<string>();
  while (!stopped) {
    const sample = await sampleDisk(directory);
    samples += 1;
    maxBytes = Math.max(maxBytes, sample.bytes);
    for (const name of sample.names) if (name.endsWith(".onnx")) artifactsSeen.add(name);
    await sleep(2);
  }
  return { maxBytes, samples, artifactsSeen };
}

function mlpRequest(random: () => number): string {
  const data = Array.from({ length: INPUT_WIDTH }, () => Math.round((random() - 0.5) * 400) / 100);
  return JSON.stringify({ inputs: [{ name: "input", shape: [1, INPUT_WIDTH], datatype: "FP32", data }] });
}

interface Outcome {
  readonly model: string;
  readonly status: number;
  readonly body: string;
}

/** Three clients sharing one counter: request i goes to model i mod 6, in order of sending. */
async function roundRobin(): Promise<Outcome[]> {
  const random = mulberry32(16);
  const outcomes: Outcome[] = [];
  let next = 0;
  const client = async () => {
    while (next < REQUESTS) {
      const model = MODELS[next % MODELS.length]!;
      next += 1;
      const response = await fetch(`${stack.url}/v2/models/${model.name}/infer`, {
        method: "POST",
        headers: { "x-api-key": TEST_API_KEY, "content-type": "application/json" },
        body: mlpRequest(random),
      });
      outcomes.push({ model: model.name, status: response.status, body: await response.text() });
    }
  };
  await Promise.all(Array.from({ length: CLIENTS }, client));
  return outcomes;
}

describe("the artifact cache under eviction pressure", () => {
  it("answers every request of three clients over six models, and never holds more than its budget on disk", async () => {
    const directory = join(dataDir, "artifact-cache");
    const totalBytes = MODELS.reduce((sum, model) => sum + model.bytes.byteLength, 0);

    const requests = roundRobin();
    const [outcomes, disk] = await Promise.all([requests, watchDisk(directory, requests)]);

    const failed = outcomes.filter((outcome) => outcome.status !== 200);
    expect(
      failed.map((outcome) => `${outcome.model}: ${outcome.status} ${outcome.body.slice(0, 300)}`),
    ).toEqual([]);
    expect(outcomes).toHaveLength(REQUESTS);
    for (const outcome of outcomes) {
      expect(JSON.parse(outcome.body)).toMatchObject({
        model_name: outcome.model,
        outputs: [{ name: "output", shape: [1, OUTPUT_WIDTH] }],
      });
    }
    // The pressure was real: the six artifacts do not fit together, and all six passed through the disk.
    expect(totalBytes).toBeGreaterThan(BUDGET_BYTES);
    expect(disk.artifactsSeen.size).toBe(MODELS.length);
    expect(disk.samples).toBeGreaterThan(20);
    expect(disk.maxBytes).toBeGreaterThan(0);
    expect(disk.maxBytes).toBeLessThanOrEqual(BUDGET_BYTES);
  }, 90_000);
});
