import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { buildBertClassifierModel } from "../../models/bert.ts";

/** One row of `length` token ids followed by `padding` pad ids (0), with its attention mask. */
function feed(tokens: readonly number[], padding: number) {
  const length = tokens.length + padding;
  const ids = BigInt64Array.from({ length }, (_, i) => BigInt(tokens[i] ?? 0));
  const mask = BigInt64Array.from({ length }, (_, i) => (i < tokens.length ? 1n : 0n));
  return {
    input_ids: new ort.Tensor("int64", ids, [1, length]),
    attention_mask: new ort.Tensor("int64", mask, [1, length]),
    token_type_ids: new ort.Tensor("int64", new BigInt64Array(length), [1, length]),
  };
}

describe("the BERT-shaped builder with attention layers", () => {
  const model = buildBertClassifierModel({ labels: 3, hidden: 32, layers: 2, heads: 4, seed: 5 });
  const tokens = [101, 2023, 2003, 1037, 3231, 102];

  it("answers the same logits for a text with or without padding: attention skips the masked positions", async () => {
    const session = await ort.InferenceSession.create(model);
    const plain = (await session.run(feed(tokens, 0))).logits?.data as Float32Array;
    const padded = (await session.run(feed(tokens, 9))).logits?.data as Float32Array;

    expect(plain).toHaveLength(3);
    for (let i = 0; i < 3; i++) expect(padded[i]).toBeCloseTo(plain[i] as number, 5);
  });

  it("lets every token reach the [CLS] state: changing the last word changes the logits", async () => {
    const session = await ort.InferenceSession.create(model);
    const before = (await session.run(feed(tokens, 0))).logits?.data as Float32Array;
    const after = (await session.run(feed([...tokens.slice(0, 4), 4248, 102], 0))).logits
      ?.data as Float32Array;

    expect(Math.max(...before.map((value, i) => Math.abs(value - (after[i] as number))))).toBeGreaterThan(
      1e-4,
    );
  });

  it("refuses a hidden width the heads do not divide", () => {
    expect(() => buildBertClassifierModel({ labels: 2, hidden: 30, layers: 1, heads: 4 })).toThrow(
      "hidden (30) must be a multiple of heads (4)",
    );
  });
});
