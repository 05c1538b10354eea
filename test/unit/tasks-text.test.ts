import { readFileSync } from "node:fs";
import { beforeAll, describe, expect, it } from "vitest";
import { classify, pool } from "#core/tasks/outputs.ts";
import type { TextBatch, TextTokenizer } from "#core/tasks/task.ts";
import { type TextTaskVersion, taskOutputs } from "#core/tasks/text-task.ts";
import { loadTextTokenizer, TokenizerError } from "#core/tasks/tokenizer.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";

const FIXTURE = new URL("../../models/fixtures/bert-uncased/", import.meta.url);
const BERT_JSON = readFileSync(new URL("tokenizer.json", FIXTURE), "utf8");
const BERT_CONFIG = JSON.parse(readFileSync(new URL("tokenizer_config.json", FIXTURE), "utf8")) as object;

/** Rows of a [batch, length] tensor, as numbers. */
function rows(values: BigInt64Array, length: number): number[][] {
  return Array.from({ length: values.length / length }, (_, r) =>
    Array.from(values.subarray(r * length, (r + 1) * length), Number),
  );
}

/**
 * A five-word WordPiece tokenizer in Hugging Face's format: "</s>" after the text (T5-style) when
 * `suffix`, no post-processor otherwise; "[PAD]" (id 7) only when `pad`.
 */
function tinyTokenizer({ suffix, pad }: { suffix: boolean; pad: boolean }): object {
  const vocab: Record<string, number> = { "[UNK]": 0, one: 1, two: 2, three: 3, four: 4, five: 5, "</s>": 6 };
  if (pad) vocab["[PAD]"] = 7;
  const special = (id: number, content: string) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  const end = { SpecialToken: { id: "</s>", type_id: 0 } };
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special(0, "[UNK]"), special(6, "</s>"), ...(pad ? [special(7, "[PAD]")] : [])],
    normalizer: { type: "Lowercase" },
    pre_tokenizer: { type: "WhitespaceSplit" },
    post_processor: suffix
      ? {
          type: "TemplateProcessing",
          single: [{ Sequence: { id: "A", type_id: 0 } }, end],
          pair: [{ Sequence: { id: "A", type_id: 0 } }, end, { Sequence: { id: "B", type_id: 1 } }, end],
          special_tokens: { "</s>": { id: "</s>", ids: [6], tokens: ["</s>"] } },
        }
      : null,
    decoder: null,
    model: {
      type: "WordPiece",
      unk_token: "[UNK]",
      continuing_subword_prefix: "##",
      max_input_chars_per_word: 100,
      vocab,
    },
  };
}

describe("loadTextTokenizer with bert-base-uncased's tokenizer.json", () => {
  let tokenizer: TextTokenizer;
  beforeAll(async () => {
    tokenizer = await loadTextTokenizer(BERT_JSON, BERT_CONFIG);
  });

  it("wraps each text in [CLS] and [SEP], lowercasing and splitting punctuation", () => {
    const batch = tokenizer.encode(["Hello, World!"], 128);

    expect(batch.batch).toBe(1);
    expect(batch.length).toBe(6);
    expect(rows(batch.inputIds, 6)).toEqual([[101, 7592, 1010, 2088, 999, 102]]);
    expect(rows(batch.attentionMask, 6)).toEqual([[1, 1, 1, 1, 1, 1]]);
    expect(rows(batch.tokenTypeIds, 6)).toEqual([[0, 0, 0, 0, 0, 0]]);
  });

  it("pads every row to the longest with [PAD] and masks the padding out", () => {
    const batch = tokenizer.encode(["Short one.", "Hello, World!", "hi"], 128);

    expect(batch.length).toBe(6);
    expect(rows(batch.inputIds, 6)).toEqual([
      [101, 2460, 2028, 1012, 102, 0],
      [101, 7592, 1010, 2088, 999, 102],
      [101, 7632, 102, 0, 0, 0],
    ]);
    expect(rows(batch.attentionMask, 6)).toEqual([
      [1, 1, 1, 1, 1, 0],
      [1, 1, 1, 1, 1, 1],
      [1, 1, 1, 0, 0, 0],
    ]);
    expect(batch.tokenCount).toBe(5 + 6 + 3);
  });

  it("truncates past maxLength keeping [SEP], as Rust tokenizers does", () => {
    const texts = ["The quick brown fox jumps over the lazy dog near the riverbank.", "Short one."];

    const batch = tokenizer.encode(texts, 10);

    // Rust tokenizers 0.23.2 on this tokenizer.json, with truncation(10) and padding (pad id 0).
    expect(rows(batch.inputIds, batch.length)).toEqual([
      [101, 1996, 4248, 2829, 4419, 14523, 2058, 1996, 13971, 102],
      [101, 2460, 2028, 1012, 102, 0, 0, 0, 0, 0],
    ]);
    expect(rows(batch.attentionMask, batch.length)).toEqual([
      [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
      [1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
    ]);
    expect(batch.tokenCount).toBe(15);
  });

  it("leaves a row of exactly maxLength tokens whole", () => {
    const batch = tokenizer.encode(["Hello, World!"], 6);

    expect(rows(batch.inputIds, 6)).toEqual([[101, 7592, 1010, 2088, 999, 102]]);
  });

  it("pads with the config's pad_token, given as a string or as an AddedToken", async () => {
    const asString = await loadTextTokenizer(BERT_JSON, { pad_token: "[MASK]" });
    const asAddedToken = await loadTextTokenizer(BERT_JSON, {
      pad_token: { content: "[MASK]", special: true },
    });

    for (const tokenizer of [asString, asAddedToken]) {
      const batch = tokenizer.encode(["hi", "Hello, World!"], 128);
      expect(rows(batch.inputIds, 6)[0]).toEqual([101, 7632, 102, 103, 103, 103]);
      expect(batch.tokenCount).toBe(9);
    }
  });

  it("answers an empty batch for no texts", () => {
    const batch = tokenizer.encode([], 128);

    expect(batch).toMatchObject({ batch: 0, length: 0, tokenCount: 0 });
    expect(batch.inputIds).toHaveLength(0);
  });

  it("rejects a maxLength too short for [CLS] and [SEP] once a text needs cutting", () => {
    expect(() => tokenizer.encode(["one two three"], 1)).toThrow(
      "maxLength 1 cannot hold the tokenizer's 2 special tokens and any text",
    );
  });

  it("rejects a maxLength that is not a positive integer", () => {
    expect(() => tokenizer.encode(["hi"], 0)).toThrow(TokenizerError);
    expect(() => tokenizer.encode(["hi"], 2.5)).toThrow("maxLength must be a positive integer, got 2.5");
  });
});

describe("loadTextTokenizer truncation and padding without BERT's template", () => {
  it("keeps a trailing special token when cutting, as Rust tokenizers does", async () => {
    const tokenizer = await loadTextTokenizer(tinyTokenizer({ suffix: true, pad: true }));

    const batch = tokenizer.encode(["One two THREE four five", "two"], 3);

    // Rust tokenizers 0.23.2: truncation(3), padding with id 7.
    expect(rows(batch.inputIds, 3)).toEqual([
      [1, 2, 6],
      [2, 6, 7],
    ]);
    expect(rows(batch.attentionMask, 3)).toEqual([
      [1, 1, 1],
      [1, 1, 0],
    ]);
  });

  it("cuts plainly when the tokenizer adds no special tokens", async () => {
    const tokenizer = await loadTextTokenizer(tinyTokenizer({ suffix: false, pad: true }));

    const batch = tokenizer.encode(["One two THREE four five", "two"], 3);

    expect(rows(batch.inputIds, 3)).toEqual([
      [1, 2, 3],
      [2, 7, 7],
    ]);
    expect(rows(batch.tokenTypeIds, 3)).toEqual([
      [0, 0, 0],
      [0, 0, 0],
    ]);
    expect(batch.tokenCount).toBe(4);
  });

  it("pads with id 0 when neither the config nor the vocabulary names a pad token", async () => {
    const tokenizer = await loadTextTokenizer(tinyTokenizer({ suffix: true, pad: false }));

    const batch = tokenizer.encode(["five", "one two"], 8);

    expect(rows(batch.inputIds, 3)).toEqual([
      [5, 6, 0],
      [1, 2, 6],
    ]);
  });
});

describe("loadTextTokenizer rejects what is not a tokenizer", () => {
  it("names invalid JSON", async () => {
    await expect(loadTextTokenizer('{"model": ')).rejects.toThrow(/^tokenizer\.json is not valid JSON: /);
  });

  it("names JSON that is not an object", async () => {
    await expect(loadTextTokenizer("[1, 2]")).rejects.toThrow(
      "tokenizer.json is not a tokenizer: it is not a JSON object",
    );
  });

  it("names the missing part of an object that is not a tokenizer", async () => {
    const error = await loadTextTokenizer('{"name": "my model"}').catch((caught: unknown) => caught);

    expect(error).toBeInstanceOf(TokenizerError);
    expect(error).toMatchObject({ name: "TokenizerError", status: 422, code: "invalid_tokenizer" });
    expect((error as Error).message).toBe(
      'tokenizer.json is not a usable tokenizer: Tokenizer must contain a "model" property',
    );
  });

  it("names a tokenizer model of an unknown type", async () => {
    const definition = { ...tinyTokenizer({ suffix: false, pad: true }), model: { type: "Telepathy" } };

    await expect(loadTextTokenizer(definition)).rejects.toThrow(
      "tokenizer.json is not a usable tokenizer: Unknown TokenizerModel type: Telepathy",
    );
  });

  it("rejects a config that is not an object", async () => {
    await expect(loadTextTokenizer(BERT_JSON, [] as unknown as object)).rejects.toThrow(
      "the tokenizer config is not a JSON object",
    );
  });
});

describe("classify", () => {
  it("answers the top_k classes of each row by softmax, best first, with their names", () => {
    const logits = Float32Array.of(1, 2, 3, 0, -1, 0.5);

    const { labels, scores } = classify(logits, 2, 3, ["a", "b", "c"], 2, false);

    expect(labels).toEqual(["c", "b", "c", "a"]);
    // softmax([1, 2, 3]) = [0.09003057, 0.24472847, 0.66524096]; softmax([0, -1, 0.5]) = [0.33149896, 0.12195165, 0.54654939]
    expect(Array.from(scores)).toEqual(
      [0.66524096, 0.24472847, 0.54654939, 0.33149896].map((x) => expect.closeTo(x, 7)),
    );
  });

  it("names classes by index when the model has no labels", () => {
    const { labels } = classify(Float32Array.of(0.1, 0.9, 0.8, 0.2), 2, 2, undefined, 1, false);

    expect(labels).toEqual(["1", "0"]);
  });

  it("keeps scores as they are when the model already answers probabilities", () => {
    const { labels, scores } = classify(Float32Array.of(0.25, 0.75), 1, 2, ["0", "180"], 2, true);

    expect(labels).toEqual(["180", "0"]);
    expect(Array.from(scores)).toEqual([0.75, 0.25]);
  });

  it("keeps class order between equal scores", () => {
    const { labels, scores } = classify(Float32Array.of(1, 3, 3, 1), 1, 4, ["a", "b", "c", "d"], 4, false);

    expect(labels).toEqual(["b", "c", "a", "d"]);
    expect(scores[0]).toBe(scores[1]);
  });

  it("answers every class when top_k exceeds the width", () => {
    const { labels, scores } = classify(Float32Array.of(2, 1), 1, 2, ["x", "y"], 5, false);

    expect(labels).toEqual(["x", "y"]);
    expect(scores).toHaveLength(2);
  });

  it("rejects labels that do not match the width, and a top_k below 1", () => {
    expect(() => classify(Float32Array.of(1, 2), 1, 2, ["only"], 1, false)).toThrow(
      "1 labels for a classifier of width 2",
    );
    expect(() => classify(Float32Array.of(1, 2), 1, 2, undefined, 0, false)).toThrow(
      "top_k must be a positive integer, got 0",
    );
    expect(() => classify(Float32Array.of(1, 2, 3), 1, 2, undefined, 1, false)).toThrow(
      "logits: expected 2 values, got 3",
    );
  });
});

describe("pool", () => {
  // [2, 3, 2]: row 0's last token is padding (a value that would show if it leaked into the mean).
  const hidden = Float32Array.of(1, 2, 3, 4, 100, 100, 0, 2, 4, 0, 2, 2);
  const mask = BigInt64Array.of(1n, 1n, 0n, 1n, 1n, 1n);

  it("averages the tokens the attention mask keeps", () => {
    const pooled = pool(hidden, 2, 3, 2, mask, "mean", false);

    expect(Array.from(pooled)).toEqual([2, 3, 2, 4 / 3].map((x) => expect.closeTo(x, 6)));
  });

  it("scales the mean to unit length when normalizing", () => {
    const pooled = pool(hidden, 2, 3, 2, mask, "mean", true);

    const expected = [
      2 / Math.sqrt(13),
      3 / Math.sqrt(13),
      2 / Math.sqrt(4 + 16 / 9),
      4 / 3 / Math.sqrt(4 + 16 / 9),
    ];
    expect(Array.from(pooled)).toEqual(expected.map((x) => expect.closeTo(x, 6)));
  });

  it("takes the first token for cls pooling", () => {
    expect(Array.from(pool(hidden, 2, 3, 2, mask, "cls", false))).toEqual([1, 2, 0, 2]);
    expect(Array.from(pool(hidden, 2, 3, 2, mask, "cls", true))).toEqual(
      [1 / Math.sqrt(5), 2 / Math.sqrt(5), 0, 1].map((x) => expect.closeTo(x, 6)),
    );
  });

  it("pools a row of padding only to zeros rather than NaN", () => {
    const pooled = pool(Float32Array.of(5, 5), 1, 1, 2, BigInt64Array.of(0n), "mean", true);

    expect(Array.from(pooled)).toEqual([0, 0]);
  });

  it("rejects a mask of the wrong size", () => {
    expect(() => pool(hidden, 2, 3, 2, BigInt64Array.of(1n), "mean", false)).toThrow(
      "attention mask: expected 6 values, got 1",
    );
  });
});

describe("a text-classification version's outputs", () => {
  const version = {
    name: "sentiment",
    version: 1,
    labels: ["negative", "positive"],
    task: { kind: "text-classification", output: "logits", probabilities: false },
  } as unknown as TextTaskVersion;
  const batch = { batch: 1, length: 3 } as unknown as TextBatch;
  const logits: NamedTensor = { name: "logits", type: "float32", dims: [1, 2], data: Float32Array.of(0, 2) };

  it("names the classes by the version's labels", () => {
    const [label] = taskOutputs(version, logits, batch, 2);
    expect(label?.data).toEqual(["positive", "negative"]);
  });

  it("falls back to class indices when a later manifest's labels no longer match the classes", () => {
    const relabelled = { ...version, labels: ["only one"] } as TextTaskVersion;
    const [label, score] = taskOutputs(relabelled, logits, batch, 1);
    expect(label?.data).toEqual(["1"]);
    expect((score?.data as Float32Array | undefined)?.[0]).toBeCloseTo(1 / (1 + Math.exp(-2)), 6);
  });
});
