import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AutoTokenizer, env, type Tensor as HfTensor, pipeline } from "@huggingface/transformers";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { classify, pool } from "#core/tasks/outputs.ts";
import type { Pooling, TextBatch, TextTokenizer } from "#core/tasks/task.ts";
import { loadTextTokenizer } from "#core/tasks/tokenizer.ts";
import { buildBertClassifierModel, buildBertEmbeddingModel } from "../../models/bert.ts";
import { BERT_FIXTURE, writeOracleModel } from "../support/hf-oracle.ts";

// The reference implementation reads the same local files and never reaches the Hub.
env.allowRemoteModels = false;
env.allowLocalModels = true;

const FIXTURE = BERT_FIXTURE;
const LABELS = ["negative", "neutral", "positive", "mixed"];
const MAX_LENGTH = 128;
const TOLERANCE = 1e-5;

// Varied, all shorter than MAX_LENGTH: transformers.js cuts long rows without keeping [SEP].
const TEXTS = [
  "Hello, World!",
  "I love transformers; they're GREAT.",
  "Café déjà vu — naïve résumé at the Hôtel de Ville.",
  "Don't stop believin'... hold on to that feelin'!",
  "The QUICK brown fox (aged 7½) jumped over 3 lazy dogs? Yes: twice, in São Paulo & Zürich.",
];

let root: string;

function writeModelDir(name: string, model: Uint8Array, config: object): string {
  return writeOracleModel(root, name, model, config);
}

/** The service's side: the model's own inputs, by name, from the batch. */
async function runModel(session: ort.InferenceSession, batch: TextBatch): Promise<ort.Tensor> {
  const dims = [batch.batch, batch.length];
  const available: Record<string, BigInt64Array> = {
    input_ids: batch.inputIds,
    attention_mask: batch.attentionMask,
    token_type_ids: batch.tokenTypeIds,
  };
  const feeds = Object.fromEntries(
    session.inputNames.map((name) => [name, new ort.Tensor("int64", available[name]!, dims)]),
  );
  const outputs = await session.run(feeds);
  return outputs[session.outputNames[0]!]!;
}

function worstDifference(expected: ArrayLike<number>, actual: ArrayLike<number>): number {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(expected[i]! - actual[i]!));
  return worst;
}

let tokenizer: TextTokenizer;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "maas-tasks-oracle-"));
  tokenizer = await loadTextTokenizer(
    readFileSync(join(FIXTURE, "tokenizer.json"), "utf8"),
    JSON.parse(readFileSync(join(FIXTURE, "tokenizer_config.json"), "utf8")) as object,
  );
});

afterAll(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

describe("text tasks against @huggingface/transformers on the same files", () => {
  it("tokenizes a padded batch exactly as AutoTokenizer does", async () => {
    const dir = writeModelDir("tokenizer-only", buildBertEmbeddingModel(), { model_type: "bert" });
    const reference = await AutoTokenizer.from_pretrained(dir, { local_files_only: true });

    const expected = reference(TEXTS, { padding: true, truncation: true }) as Record<string, HfTensor>;
    const batch = tokenizer.encode(TEXTS, MAX_LENGTH);

    expect([batch.batch, batch.length]).toEqual(expected.input_ids!.dims);
    expect(Array.from(batch.inputIds)).toEqual(Array.from(expected.input_ids!.data as BigInt64Array));
    expect(Array.from(batch.attentionMask)).toEqual(
      Array.from(expected.attention_mask!.data as BigInt64Array),
    );
    expect(Array.from(batch.tokenTypeIds)).toEqual(
      Array.from(expected.token_type_ids!.data as BigInt64Array),
    );
    // The texts differ in length, so the batch really is padded.
    expect(batch.tokenCount).toBeLessThan(batch.batch * batch.length);
  });

  for (const { pooling, tokenTypeIds } of [
    { pooling: "mean", tokenTypeIds: true },
    { pooling: "cls", tokenTypeIds: true },
    { pooling: "mean", tokenTypeIds: false },
  ] as const satisfies readonly { pooling: Pooling; tokenTypeIds: boolean }[]) {
    const inputs = tokenTypeIds ? "three inputs" : "no token_type_ids input";
    it(`matches the feature-extraction pipeline's ${pooling}-pooled, normalized embeddings (${inputs})`, async () => {
      const model = buildBertEmbeddingModel({ seed: 11, tokenTypeIds });
      const dir = writeModelDir(`embed-${pooling}-${tokenTypeIds}`, model, { model_type: "bert" });
      const extractor = await pipeline("feature-extraction", dir, {
        local_files_only: true,
        dtype: "fp32",
        device: "cpu",
      });
      const expected = await extractor(TEXTS, { pooling, normalize: true });

      const session = await ort.InferenceSession.create(model);
      const batch = tokenizer.encode(TEXTS, MAX_LENGTH);
      const hidden = await runModel(session, batch);
      const [, , width] = hidden.dims as [number, number, number];
      const embeddings = pool(
        hidden.data as Float32Array,
        batch.batch,
        batch.length,
        width,
        batch.attentionMask,
        pooling,
        true,
      );

      expect(expected.dims).toEqual([TEXTS.length, width]);
      expect(worstDifference(expected.data as Float32Array, embeddings)).toBeLessThan(TOLERANCE);
      // Different texts give different embeddings: the comparison is not between constants.
      expect(embeddings.subarray(0, width)).not.toEqual(embeddings.subarray(width, 2 * width));
      await session.release();
      await extractor.dispose();
    });
  }

  it("matches the text-classification pipeline's labels and scores, all classes ranked", async () => {
    const model = buildBertClassifierModel({ labels: LABELS.length, seed: 5 });
    const dir = writeModelDir("classifier", model, {
      model_type: "bert",
      id2label: Object.fromEntries(LABELS.map((label, i) => [String(i), label])),
      label2id: Object.fromEntries(LABELS.map((label, i) => [label, i])),
    });
    const classifier = await pipeline("text-classification", dir, { local_files_only: true, dtype: "fp32" });
    const expected = (await classifier(TEXTS, { top_k: LABELS.length })) as unknown as {
      label: string;
      score: number;
    }[][];

    const session = await ort.InferenceSession.create(model);
    const batch = tokenizer.encode(TEXTS, MAX_LENGTH);
    const logits = await runModel(session, batch);
    const { labels, scores } = classify(
      logits.data as Float32Array,
      batch.batch,
      LABELS.length,
      LABELS,
      LABELS.length,
      false,
    );

    expect(labels).toEqual(expected.flat().map((entry) => entry.label));
    expect(
      worstDifference(
        expected.flat().map((entry) => entry.score),
        scores,
      ),
    ).toBeLessThan(TOLERANCE);
    // Each text gets its own scores: the classifier sees more than the [CLS] id every row starts with.
    expect(new Set(TEXTS.map((_, row) => scores[row * LABELS.length])).size).toBe(TEXTS.length);
    await session.release();
    await classifier.dispose();
  });
});
