import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LocalStack } from "../../local/stack.ts";
import { buildImageMeanModel } from "../../models/zoo.ts";
import { decodeBinaryResponse, encodeBinaryRequest } from "../support/binary-v2.ts";
import { runMaasBytes, startCliStack } from "../support/cli.ts";
import { stopTestStack, TEST_API_KEY } from "../support/local-stack.ts";

const IMAGE_MODEL = "cli-image-mean";
const IRIS_ROWS = [
  [5.1, 3.5, 1.4, 0.2],
  [6.7, 3.1, 4.7, 1.5],
];

let stack: LocalStack | undefined;
let dataDir: string | undefined;

/** Runs `maas <args>` as a user would, stdout kept as bytes: a binary result may come there. */
const maas = (...args: string[]) => runMaasBytes(dataDir, args, 120_000);

/** Deterministic pixels, different per image. */
function imagePixels(batch: number): Float32Array {
  return Float32Array.from({ length: batch * 3 * 640 * 640 }, (_, i) => Math.sin(i * 0.37) + (i % 7) / 7);
}

/** A binary-extension request for `batch` images, asking for the output in binary too. */
function imageRequest(batch: number) {
  const pixels = imagePixels(batch);
  const encoded = encodeBinaryRequest({
    inputs: [{ name: "image", datatype: "FP32", shape: [batch, 3, 640, 640], data: pixels, binary: true }],
    parameters: { binary_data_output: true },
  });
  return { pixels, ...encoded };
}

async function directMean(pixels: Float32Array, batch: number): Promise<number[]> {
  const session = await ort.InferenceSession.create(buildImageMeanModel());
  try {
    const { mean } = await session.run({ image: new ort.Tensor("float32", pixels, [batch, 3, 640, 640]) });
    return Array.from(mean!.data as Float32Array);
  } finally {
    await session.release();
  }
}

function irisRequest(shape: number[], data: number[]): string {
  return JSON.stringify({ inputs: [{ name: "features", shape, datatype: "FP32", data }] });
}

async function inputFile(name: string, contents: string | Uint8Array): Promise<string> {
  const path = join(dataDir!, name);
  await writeFile(path, contents);
  return path;
}

function meanOf(body: Buffer, headerLength: number): number[] {
  const decoded = decodeBinaryResponse(body, headerLength);
  const mean = decoded.outputs.find((output) => output.name === "mean");
  expect(mean?.hadJsonData).toBe(false);
  return Array.from(mean!.values as Float32Array);
}

beforeAll(async () => {
  ({ stack, dataDir } = await startCliStack("cli-async", { demo: true }));
  await stack.publish(IMAGE_MODEL, 1, buildImageMeanModel(), { manifest: { pinOriginal: true } });
}, 120_000);

afterAll(() => stopTestStack(stack, dataDir));

describe("maas invoke --async against a local stack", () => {
  it("uploads a 20 MB binary-extension input in parts and writes the binary result to --output", async () => {
    const batch = 4;
    const { pixels, body, headerLength } = imageRequest(batch);
    const input = await inputFile("images.bin", body);
    const output = join(dataDir!, "means.bin");

    const run = await maas(
      "invoke",
      IMAGE_MODEL,
      "--async",
      "--input",
      `@${input}`,
      "--header-length",
      String(headerLength),
      "--output",
      output,
    );

    expect(run.code, run.stderr).toBe(0);
    expect(body.length).toBeGreaterThan(19_000_000);
    // Not a terminal: one line per part (8 MiB each), the final progress line, the job's status changes.
    const partLines = run.stderr.split("\n").filter((line) => line.startsWith("uploaded part "));
    expect(partLines.map((line) => line.slice(0, "uploaded part 1/3".length)).sort()).toEqual([
      "uploaded part 1/3",
      "uploaded part 2/3",
      "uploaded part 3/3",
    ]);
    expect(partLines.at(-1)).toContain(`(3 of 3 done, ${(body.length / 1e6).toFixed(1)} / `);
    expect(run.stderr).toMatch(new RegExp(`\\] 100%  ${(body.length / 1e6).toFixed(1)} / `));
    expect(run.stderr).toMatch(/^job \S+: succeeded$|^job \S+ \(cli-image-mean version 1\): succeeded$/m);
    const summary = JSON.parse(run.stdout.toString("utf8")) as Record<string, unknown>;
    expect(summary).toMatchObject({
      model_name: IMAGE_MODEL,
      model_version: "1",
      status: "succeeded",
      output,
      output_content_type: "application/octet-stream",
      inference_header_content_length: expect.any(Number),
    });
    const written = await readFile(output);
    expect(summary.output_bytes).toBe(written.length);
    expect(meanOf(written, summary.inference_header_content_length as number)).toEqual(
      await directMean(pixels, batch),
    );
  }, 150_000);

  it("writes a binary result to stdout when stdout is not a terminal, after a single PUT", async () => {
    const { pixels, body, headerLength } = imageRequest(1);
    const input = await inputFile("image.bin", body);

    const run = await maas(
      "invoke",
      IMAGE_MODEL,
      "--async",
      "--input",
      `@${input}`,
      "--header-length",
      `${headerLength}`,
    );

    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).not.toMatch(/uploaded part/);
    const resultHeader = /a JSON header of (\d+) bytes/.exec(run.stderr)?.[1];
    expect(resultHeader, run.stderr).toBeDefined();
    expect(meanOf(run.stdout, Number(resultHeader))).toEqual(await directMean(pixels, 1));
  }, 150_000);

  it("prints the V2 response of a small JSON input file on stdout, as synchronous inference answers", async () => {
    const request = irisRequest([2, 4], IRIS_ROWS.flat());
    const input = await inputFile("iris.json", request);
    const sync = await fetch(`${stack!.url}/v2/models/iris/infer`, {
      method: "POST",
      headers: { "x-api-key": TEST_API_KEY, "content-type": "application/json" },
      body: request,
      signal: AbortSignal.timeout(30_000),
    });

    const run = await maas("invoke", "iris", "--async", "--input", `@${input}`);

    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/^job \S+ submitted; GET \/v2\/jobs\/\S+ shows it$/m);
    const answer = JSON.parse(run.stdout.toString("utf8")) as { outputs: { name: string }[] };
    expect(answer.outputs.map((output) => output.name)).toContain("label");
    expect(answer).toEqual(await sync.json());
  }, 150_000);

  it("submits an inline JSON --input as is, with no upload", async () => {
    const run = await maas("invoke", "iris", "--async", "--input", irisRequest([2, 4], IRIS_ROWS.flat()));

    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).not.toMatch(/100%/);
    const answer = JSON.parse(run.stdout.toString("utf8")) as { model_name: string; outputs: unknown[] };
    expect(answer.model_name).toBe("iris");
    expect(answer.outputs.length).toBeGreaterThan(0);
  }, 150_000);

  it("exits 1 with the job's error when the model refuses the uploaded input, through --api and --api-key", async () => {
    const input = await inputFile("wrong-shape.json", irisRequest([1, 3], [1, 2, 3]));

    const run = await maas(
      "invoke",
      "iris",
      "--async",
      "--input",
      `@${input}`,
      "--api",
      stack!.url,
      "--api-key",
      TEST_API_KEY,
    );

    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^maas invoke: job \S+ failed: .*features/m);
    expect(run.stdout.length).toBe(0);
  }, 150_000);

  it("refuses a file that is not JSON without --header-length, naming the length its header seems to have", async () => {
    const { body, headerLength } = imageRequest(1);
    const input = await inputFile("unmarked.bin", body);

    const run = await maas(
      "invoke",
      IMAGE_MODEL,
      "--async",
      "--input",
      `@${input}`,
      "--output",
      join(dataDir!, "x.bin"),
    );

    expect(run.code).toBe(2);
    expect(run.stderr).toContain(`is not JSON; a binary-extension body`);
    expect(run.stderr).toContain(`--header-length ${headerLength})`);
  }, 150_000);
});
