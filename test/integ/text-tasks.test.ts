import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { PutObjectCommand } from "@aws-sdk/client-s3";
import { env, pipeline } from "@huggingface/transformers";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isServable } from "#core/registry/registry.ts";
import type { LocalStack } from "../../local/stack.ts";
import { writeStackFile } from "../../local/stack-file.ts";
import { buildBertClassifierModel, buildBertEmbeddingModel } from "../../models/bert.ts";
import { ROOT } from "../infra/support.ts";
import { BERT_FIXTURE, writeOracleModel } from "../support/hf-oracle.ts";
import { startTestStack, stopTestStack, TEST_ADMIN_KEY, TEST_API_KEY } from "../support/local-stack.ts";

/**
 * Issue 19, text tasks end to end through the local stack: a publisher uploads model.onnx,
 * tokenizer.json and a manifest naming the task; callers send text on the V2 route (labels and scores,
 * or embeddings) and OpenAI's embeddings API, checked against @huggingface/transformers' pipelines on
 * the same files; the tensor route keeps working; a broken chain fails registration with its reason.
 */
env.allowRemoteModels = false;
env.allowLocalModels = true;

const FIXTURE = BERT_FIXTURE;
const TOKENIZER = readFileSync(join(FIXTURE, "tokenizer.json"), "utf8");
const LABELS = ["negative", "neutral", "positive"];
const TEXTS = [
  "I love this, it's GREAT!",
  "Terrible service; never again.",
  "Café déjà vu at the Hôtel de Ville.",
];
const TOLERANCE = 1e-5;

let stack: LocalStack;
let dataDir: string | undefined;
let oracleDir: string;
const classifier = buildBertClassifierModel({ labels: LABELS.length, seed: 7 });
const embedder = buildBertEmbeddingModel({ seed: 8 });

function oracleModel(name: string, model: Uint8Array, config: object): string {
  return writeOracleModel(oracleDir, name, model, config);
}

async function putTokenizer(name: string, version: number, text = TOKENIZER): Promise<void> {
  await stack.emulators.s3Client().send(
    new PutObjectCommand({
      Bucket: stack.bucket,
      Key: `models/${name}/${version}/tokenizer.json`,
      Body: text,
    }),
  );
}

async function post(path: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const response = await fetch(`${stack.url}${path}`, {
    method: "POST",
    headers: { "x-api-key": TEST_API_KEY, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

function textRequest(texts: readonly string[], parameters?: object) {
  return {
    inputs: [{ name: "text", datatype: "BYTES", shape: [texts.length], data: texts }],
    ...(parameters ? { parameters } : {}),
  };
}

type Output = { name: string; datatype: string; shape: number[]; data: (number | string)[] };

beforeAll(async () => {
  oracleDir = mkdtempSync(join(tmpdir(), "maas-text-tasks-"));
  ({ stack, dataDir } = await startTestStack("text-tasks", { demo: false }));
  await putTokenizer("sentiment", 1);
  const sentiment = await stack.publish("sentiment", 1, classifier, {
    manifest: { task: "text-classification", tokenizer: "tokenizer.json", labels: LABELS, maxLength: 64 },
  });
  await putTokenizer("minilm", 1);
  const minilm = await stack.publish("minilm", 1, embedder, {
    manifest: { task: "feature-extraction", tokenizer: "tokenizer.json", pooling: "mean", normalize: true },
  });
  for (const version of [sentiment, minilm])
    if (!isServable(version)) throw new Error(`${version.name} did not register: ${version.reason}`);
  await writeStackFile(dataDir as string, {
    url: stack.url,
    s3Endpoint: stack.emulators.s3Endpoint,
    bucket: stack.bucket,
    apiKey: TEST_API_KEY,
    adminKey: TEST_ADMIN_KEY,
    s3Credentials: { accessKeyId: "local", secretAccessKey: "local" },
  });
}, 120_000);

afterAll(async () => {
  await stopTestStack(stack, dataDir);
  if (oracleDir) rmSync(oracleDir, { recursive: true, force: true });
});

describe("text-classification on the V2 route", () => {
  it("answers labels and scores as the transformers pipeline does on the same files", async () => {
    const { status, json } = await post("/v2/models/sentiment/infer", textRequest(TEXTS, { top_k: 3 }));
    expect(status, JSON.stringify(json)).toBe(200);
    const outputs = json.outputs as Output[];
    const labels = outputs.find((output) => output.name === "label");
    const scores = outputs.find((output) => output.name === "score");
    expect(labels).toMatchObject({ datatype: "BYTES", shape: [3, 3] });
    expect(scores).toMatchObject({ datatype: "FP32", shape: [3, 3] });

    const dir = oracleModel("sentiment", classifier, {
      model_type: "bert",
      id2label: Object.fromEntries(LABELS.map((label, i) => [i, label])),
    });
    const reference = await pipeline("text-classification", dir, { local_files_only: true, dtype: "fp32" });
    const expected = (await reference(TEXTS, { top_k: 3 })) as unknown as {
      label: string;
      score: number;
    }[][];
    for (const [row, ranked] of expected.entries()) {
      expect(labels?.data.slice(row * 3, row * 3 + 3)).toEqual(ranked.map((entry) => entry.label));
      for (const [k, entry] of ranked.entries())
        expect(Math.abs((scores?.data[row * 3 + k] as number) - entry.score)).toBeLessThan(TOLERANCE);
    }
  });

  it("answers the top label alone by default, and still serves the tensor route", async () => {
    const top = await post("/v2/models/sentiment/infer", textRequest(["fine"]));
    expect((top.json.outputs as Output[]).find((output) => output.name === "label")?.shape).toEqual([1, 1]);

    const tensors = await post("/v2/models/sentiment/infer", {
      inputs: [
        { name: "input_ids", datatype: "INT64", shape: [1, 3], data: [101, 7592, 102] },
        { name: "attention_mask", datatype: "INT64", shape: [1, 3], data: [1, 1, 1] },
        { name: "token_type_ids", datatype: "INT64", shape: [1, 3], data: [0, 0, 0] },
      ],
    });
    expect(tensors.status, JSON.stringify(tensors.json)).toBe(200);
    expect((tensors.json.outputs as Output[])[0]).toMatchObject({ name: "logits", shape: [1, 3] });
  });

  it("shows the task beside the tensors in the model's metadata", async () => {
    const response = await fetch(`${stack.url}/v2/models/sentiment`, {
      headers: { "x-api-key": TEST_API_KEY },
    });
    const metadata = (await response.json()) as { inputs: { name: string }[]; parameters: { task: unknown } };
    expect(metadata.inputs.map((input) => input.name)).toContain("input_ids");
    expect(metadata.parameters.task).toEqual({
      name: "text-classification",
      inputs: [{ name: "text", datatype: "BYTES", shape: [-1] }],
      outputs: [
        { name: "label", datatype: "BYTES", shape: [-1, -1] },
        { name: "score", datatype: "FP32", shape: [-1, -1] },
      ],
    });
  });

  it("refuses a text input that is not BYTES [N], and a bad top_k, naming them", async () => {
    const wrongShape = await post("/v2/models/sentiment/infer", {
      inputs: [{ name: "text", datatype: "BYTES", shape: [1, 2], data: ["a", "b"] }],
    });
    expect(wrongShape.status).toBe(400);
    expect(String(wrongShape.json.error)).toMatch(/text/);
    const badTopK = await post("/v2/models/sentiment/infer", textRequest(["a"], { top_k: 0 }));
    expect(badTopK.status).toBe(400);
    expect(String(badTopK.json.error)).toMatch(/top_k/);
  });
});

describe("maas invoke --text", () => {
  it("prints each text's labels and scores, best first", async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [
        "--disable-warning=ExperimentalWarning",
        "--import",
        "tsx",
        "bin/maas.ts",
        "invoke",
        "sentiment",
        "--text",
        TEXTS[0] as string,
        "--text",
        TEXTS[1] as string,
        "--top-k",
        "2",
      ],
      { cwd: ROOT, env: { ...process.env, MAAS_DATA_DIR: dataDir }, timeout: 60_000 },
    );
    const { json } = await post("/v2/models/sentiment/infer", textRequest(TEXTS.slice(0, 2), { top_k: 2 }));
    const [labels, scores] = json.outputs as Output[];
    const expected = [0, 1].map(
      (row) =>
        `${labels?.data[row * 2]} ${Number(scores?.data[row * 2]).toFixed(4)}, ${labels?.data[row * 2 + 1]} ${Number(scores?.data[row * 2 + 1]).toFixed(4)}\t${TEXTS[row]}`,
    );
    expect(stdout.trimEnd().split("\n")).toEqual(expected);
  });
});

describe("feature-extraction", () => {
  async function referenceEmbeddings(): Promise<number[][]> {
    const dir = oracleModel("minilm", embedder, { model_type: "bert" });
    const reference = await pipeline("feature-extraction", dir, { local_files_only: true, dtype: "fp32" });
    const tensor = await reference(TEXTS, { pooling: "mean", normalize: true });
    return tensor.tolist() as number[][];
  }

  it("answers embeddings on the V2 route as the transformers pipeline does", async () => {
    const { status, json } = await post("/v2/models/minilm/infer", textRequest(TEXTS));
    expect(status, JSON.stringify(json)).toBe(200);
    const [embedding] = json.outputs as Output[];
    expect(embedding).toMatchObject({ name: "embedding", datatype: "FP32" });
    const expected = await referenceEmbeddings();
    expect(embedding?.shape).toEqual([TEXTS.length, expected[0]?.length]);
    for (const [i, value] of expected.flat().entries())
      expect(Math.abs((embedding?.data[i] as number) - value)).toBeLessThan(TOLERANCE);
  });

  it("answers OpenAI's embeddings API to the openai client, as floats and as base64", async () => {
    const client = new OpenAI({
      apiKey: "unused",
      baseURL: `${stack.url}/v1`,
      defaultHeaders: { "x-api-key": TEST_API_KEY },
      maxRetries: 0,
    });
    const expected = await referenceEmbeddings();
    // The client asks for base64 unless told otherwise, and decodes it.
    const asBase64 = await client.embeddings.create({ model: "minilm", input: TEXTS });
    const asFloats = await client.embeddings.create({
      model: "minilm:1",
      input: TEXTS,
      encoding_format: "float",
    });
    for (const answer of [asBase64, asFloats]) {
      expect(answer.object).toBe("list");
      expect(answer.data.map((item) => item.index)).toEqual([0, 1, 2]);
      expect(answer.usage.prompt_tokens).toBeGreaterThan(TEXTS.length * 3);
      for (const [row, item] of answer.data.entries())
        for (const [i, value] of item.embedding.entries())
          expect(Math.abs(value - (expected[row]?.[i] as number))).toBeLessThan(TOLERANCE);
    }
    const single = await client.embeddings.create({
      model: "minilm",
      input: "one text",
      encoding_format: "float",
    });
    expect(single.data).toHaveLength(1);

    const models = await client.models.list();
    expect(models.data.map((model) => model.id)).toEqual(["minilm"]);

    await expect(client.embeddings.create({ model: "sentiment", input: "x" })).rejects.toMatchObject({
      status: 400,
      message: expect.stringContaining("not a feature-extraction model"),
    });
    await expect(client.embeddings.create({ model: "nope", input: "x" })).rejects.toMatchObject({
      status: 404,
    });
  });
});

describe("OpenAI's embeddings route refuses bad bodies in OpenAI's error shape", () => {
  it("answers 400 for a body nested too deep, one that is not JSON, and an input that is not text", async () => {
    const send = async (body: string) => {
      const response = await fetch(`${stack.url}/v1/embeddings`, {
        method: "POST",
        headers: { "x-api-key": TEST_API_KEY, "content-type": "application/json" },
        body,
      });
      return {
        status: response.status,
        json: (await response.json()) as { error: { message: string; type: string } },
      };
    };
    const deep = await send(`{"model":"minilm","input":${"[".repeat(100_000)}${"]".repeat(100_000)}}`);
    expect(deep.status).toBe(400);
    expect(deep.json.error).toMatchObject({
      type: "invalid_request_error",
      message: expect.stringMatching(/nests deeper/),
    });
    expect((await send("{not json")).status).toBe(400);
    const numbers = await send('{"model":"minilm","input":[1,2,3]}');
    expect(numbers.status).toBe(400);
    expect(numbers.json.error.message).toMatch(/input/);
  });
});

describe("optimization of a text model", () => {
  it("checks variants on inputs from the version's own tokenizer, not random ids past its vocabulary", async () => {
    const deadline = Date.now() + 90_000;
    let record = await stack.registry.getVersionConsistent("sentiment", 1);
    while (record?.optimizedAt === undefined && Date.now() < deadline) {
      await new Promise((wake) => setTimeout(wake, 250));
      record = await stack.registry.getVersionConsistent("sentiment", 1);
    }
    expect(record?.optimizedAt).toBeDefined();
    expect(record?.optimizeError).toBeUndefined();
    const compared = record?.variants.filter((variant) => variant.parity !== undefined) ?? [];
    expect(compared.length).toBeGreaterThan(0);
    for (const variant of compared) expect(variant.error).toBeUndefined();
  });
});

describe("registration checks the whole chain", () => {
  it("fails a version whose tokenizer is not a tokenizer, whose labels do not match, or whose tokenizer is missing", async () => {
    await putTokenizer("broken", 1, '{"version": "1.0", "model": {"type": "Nonsense"}}');
    const broken = await stack.publish("broken", 1, classifier, {
      manifest: { task: "text-classification", tokenizer: "tokenizer.json", labels: LABELS },
    });
    expect(broken.status).toBe("failed");
    expect(broken.reason).toMatch(/tokenizer\.json is not a Hugging Face tokenizer/);

    await putTokenizer("mislabelled", 1);
    const mislabelled = await stack.publish("mislabelled", 1, classifier, {
      manifest: { task: "text-classification", tokenizer: "tokenizer.json", labels: ["yes", "no"] },
    });
    expect(mislabelled.status).toBe("failed");
    expect(mislabelled.reason).toBe("labels has 2 entries; the classifier outputs 3 classes");

    const missing = await stack.publish("untokenized", 1, embedder, {
      manifest: { task: "feature-extraction", tokenizer: "tokenizer.json" },
    });
    expect(missing.status).toBe("failed");
    expect(missing.reason).toMatch(/models\/untokenized\/1\/tokenizer\.json is not in the bucket/);
  });
});
