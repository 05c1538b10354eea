import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ModelVersion } from "#core/model.ts";
import type { LocalStack } from "../../local/stack.ts";
import { buildMlpModel } from "../../models/mlp.ts";
import { type CliResult, runMaas, startCliStack } from "../support/cli.ts";
import { stopTestStack, TEST_API_KEY } from "../support/local-stack.ts";
import { cosine } from "../support/numeric.ts";

const NAME = "cli-mlp";
const WIDTH = 128;
/** A 128x256 first layer: over the quantizer's 16 384 elements, so the optimizer builds int8-dynamic. */
const MODEL = buildMlpModel({ layers: [WIDTH, 256, 8], seed: 4, name: NAME });
const REQUEST = JSON.stringify({
  inputs: [
    {
      name: "input",
      shape: [2, WIDTH],
      datatype: "FP32",
      data: Array.from({ length: 2 * WIDTH }, (_, i) => Math.sin(i / 5)),
    },
  ],
});

let dataDir: string;
let stack: LocalStack;

/** Runs `maas <args>` as a user would, against the stack named by the data dir's stack.json. */
const maas = (...args: string[]) => runMaas(dataDir, args, 150_000);

/** Infers until the answer comes from `variant`: a choice reaches inference within its registry cache's TTL. */
async function inferUntilServedBy(variant: string, timeoutMs = 15_000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const response = await fetch(`${stack.url}/v2/models/${NAME}/versions/1/infer`, {
      method: "POST",
      headers: { "x-api-key": TEST_API_KEY, "content-type": "application/json" },
      body: REQUEST,
    });
    const text = await response.text();
    expect(response.status, text).toBe(200);
    const served = response.headers.get("x-maas-variant");
    if (served === variant) {
      return (JSON.parse(text) as { outputs: { data: number[] }[] }).outputs[0]!.data;
    }
    if (Date.now() > deadline)
      throw new Error(`still served by ${served} after ${timeoutMs} ms, not ${variant}`);
    await new Promise((wake) => setTimeout(wake, 200));
  }
}

beforeAll(async () => {
  // Credentials of this data directory's own, as npm start makes them: the CLI must sign with them.
  ({ stack, dataDir } = await startCliStack("cli", { demo: false }));
  await writeFile(join(dataDir, `${NAME}.onnx`), MODEL);
});

afterAll(() => stopTestStack(stack, dataDir));

describe("maas CLI against a local stack", () => {
  let published: CliResult;
  let settled: ModelVersion | undefined;

  beforeAll(async () => {
    published = await maas(
      "publish",
      join(dataDir, `${NAME}.onnx`),
      "--name",
      NAME,
      "--wait",
      "--wait-timeout",
      "120",
    );
    settled = await stack.registry.getVersionConsistent(NAME, 1);
  });

  it("publish --wait returns once optimization settled, showing each phase once on stderr", () => {
    expect(published.code, published.stderr).toBe(0);
    expect(settled).toMatchObject({ status: "ready", optimizedAt: expect.any(String) });
    const phases = published.stderr
      .split("\n")
      .filter((line) => line.startsWith(`${NAME} version 1: `))
      .map((line) => line.slice(`${NAME} version 1: `.length));
    // The optimizer may finish between two polls: `optimizing` can go unseen, nothing else can.
    expect(["registering,optimizing,ready", "registering,ready"]).toContain(phases.join(","));
    expect(published.stdout).toMatch(
      new RegExp(`^${NAME} version 1 is ready on lambda, serving \\S+ \\(sha256 [0-9a-f]{64}\\)$`, "m"),
    );
  });

  it("serves int8-dynamic once `maas variant` chooses it, and the original again after `maas variant ... original`", async () => {
    const int8 = settled?.variants.find((variant) => variant.kind === "int8-dynamic");
    expect(int8?.artifact, JSON.stringify(settled?.variants)).toBeDefined();

    const chosen = await maas("variant", NAME, "1", "int8-dynamic");
    const onInt8 = await inferUntilServedBy("int8-dynamic");
    const back = await maas("variant", NAME, "1", "original");
    const onOriginal = await inferUntilServedBy("original");

    expect(chosen.code, chosen.stderr).toBe(0);
    expect(chosen.stdout).toMatch(new RegExp(`^${NAME} version 1 now serves int8-dynamic \\(operator\\)`));
    expect(back.code, back.stderr).toBe(0);
    expect(back.stdout).toMatch(new RegExp(`^${NAME} version 1 now serves original \\(operator\\)`));
    expect(await stack.registry.getVersionConsistent(NAME, 1)).toMatchObject({
      variantChoice: { kind: "original", by: "operator" },
    });
    // Quantized weights: close to the original's outputs, which the original serves exactly again.
    expect(cosine(onInt8, onOriginal)).toBeGreaterThan(0.99);
  });

  it("refuses a variant the version does not have, naming the ones it has, with exit code 1", async () => {
    const refused = await maas("variant", NAME, "1", "int3");
    const misused = await maas("variant", NAME, "latest", "original");

    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/HTTP 409: .*has no variant 'int3'; its variants are: original, /);
    expect(misused.code).toBe(2);
    expect(misused.stderr).toMatch(/'latest' is not a version number/);
  });

  it("lists the versions as a table, and as the admin records with --json", async () => {
    await stack.registry.setAlias(NAME, "default", 1);

    const table = await maas("versions", NAME);
    const json = await maas("versions", NAME, "--json");

    expect(table.code, table.stderr).toBe(0);
    const [header, row, ...rest] = table.stdout.trimEnd().split("\n");
    expect(header?.split(/\s{2,}/)).toEqual([
      "VERSION",
      "STATUS",
      "TARGET",
      "VARIANT",
      "ALIASES",
      "WARNINGS",
    ]);
    expect(row?.split(/\s{2,}/)).toEqual(["1", "ready", "lambda", "original (operator)", "default", "-"]);
    expect(rest).toEqual([]);
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual([
      expect.objectContaining({
        name: NAME,
        version: 1,
        serving: "original",
        variantChoice: expect.objectContaining({ kind: "original", by: "operator" }),
        aliases: ["default"],
        variants: expect.arrayContaining([expect.objectContaining({ kind: "int8-dynamic" })]),
      }),
    ]);
  });
});
