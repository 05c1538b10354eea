import type { Tokenizer } from "@huggingface/tokenizers";
import { MaasError } from "#core/errors.ts";
import type { TextBatch, TextTokenizer } from "./task.ts";

/** The publisher's `tokenizer.json` (or its config, or the manifest's maxLength) cannot tokenize. */
export class TokenizerError extends MaasError {
  constructor(message: string, options?: ErrorOptions) {
    super(422, "invalid_tokenizer", message, options);
    this.name = "TokenizerError";
  }
}

/**
 * Builds a tokenizer from a `tokenizer.json` (Hugging Face's format, text or parsed) and its optional
 * `tokenizer_config.json`. Building one for bert-base-uncased's 30 522-token vocabulary takes tens of
 * milliseconds: load it once per model version and keep it.
 */
export async function loadTextTokenizer(
  tokenizerJson: string | object,
  config: object = {},
): Promise<TextTokenizer> {
  const definition = typeof tokenizerJson === "string" ? parseJson(tokenizerJson) : tokenizerJson;
  if (!isRecord(definition))
    throw new TokenizerError("tokenizer.json is not a tokenizer: it is not a JSON object");
  if (!isRecord(config)) throw new TokenizerError("the tokenizer config is not a JSON object");
  // Imported here, not at module scope, so that only text models pay for it on a cold start.
  const { Tokenizer } = await import("@huggingface/tokenizers");
  let tokenizer: Tokenizer;
  try {
    tokenizer = new Tokenizer(definition, config);
    // Some broken definitions (a model without a vocabulary) only fail when they first encode.
    tokenizer.encode("a");
  } catch (error) {
    throw new TokenizerError(`tokenizer.json is not a usable tokenizer: ${(error as Error).message}`, {
      cause: error,
    });
  }
  return new HuggingFaceTextTokenizer(tokenizer, padTokenId(tokenizer, config));
}

/** The pad id: the config's `pad_token`, else `[PAD]`, else 0 (the ids a padded row ends with). */
function padTokenId(tokenizer: Tokenizer, config: Record<string, unknown>): number {
  const configured = config.pad_token;
  // tokenizer_config.json writes pad_token as a string, or as a serialized AddedToken ({ content }).
  const name =
    typeof configured === "string"
      ? configured
      : isRecord(configured) && typeof configured.content === "string"
        ? configured.content
        : undefined;
  return (
    (name === undefined ? undefined : tokenizer.token_to_id(name)) ?? tokenizer.token_to_id("[PAD]") ?? 0
  );
}

interface Row {
  readonly ids: readonly number[];
  readonly typeIds: readonly number[];
}

class HuggingFaceTextTokenizer implements TextTokenizer {
  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly padId: number,
  ) {}

  encode(texts: readonly string[], maxLength: number): TextBatch {
    if (!Number.isInteger(maxLength) || maxLength < 1) {
      throw new TokenizerError(`maxLength must be a positive integer, got ${maxLength}`);
    }
    const rows = texts.map((text) => this.encodeRow(text, maxLength));
    const batch = rows.length;
    const length = Math.max(0, ...rows.map((row) => row.ids.length));
    const inputIds = new BigInt64Array(batch * length).fill(BigInt(this.padId));
    const attentionMask = new BigInt64Array(batch * length);
    const tokenTypeIds = new BigInt64Array(batch * length);
    let tokenCount = 0;
    rows.forEach((row, r) => {
      const offset = r * length;
      for (let t = 0; t < row.ids.length; t++) {
        inputIds[offset + t] = BigInt(row.ids[t]!);
        attentionMask[offset + t] = 1n;
        tokenTypeIds[offset + t] = BigInt(row.typeIds[t]!);
      }
      tokenCount += row.ids.length;
    });
    return { batch, length, inputIds, attentionMask, tokenTypeIds, tokenCount };
  }

  /**
   * One text with its special tokens; past maxLength, the text's own tokens are cut so that the
   * special tokens around them stay (Rust tokenizers' truncation, which Python's pipelines use).
   */
  private encodeRow(text: string, maxLength: number): Row {
    const full = this.tokenizer.encode(text, { return_token_type_ids: true });
    const typeIds = full.token_type_ids ?? full.ids.map(() => 0);
    if (full.ids.length <= maxLength) return { ids: full.ids, typeIds };
    const bare = this.tokenizer.encode(text, { add_special_tokens: false }).ids;
    const prefix = specialPrefixLength(full.ids, bare);
    const suffix = full.ids.length - bare.length - prefix;
    if (maxLength < prefix + suffix) {
      throw new TokenizerError(
        `maxLength ${maxLength} cannot hold the tokenizer's ${prefix + suffix} special tokens and any text`,
      );
    }
    const keep = maxLength - prefix - suffix;
    const cut = (values: readonly number[]) => [
      ...values.slice(0, prefix + keep),
      ...values.slice(values.length - suffix),
    ];
    return { ids: cut(full.ids), typeIds: cut(typeIds) };
  }
}

/** Where the bare tokens sit inside the encoding with special tokens: how many specials come first. */
function specialPrefixLength(full: readonly number[], bare: readonly number[]): number {
  for (let start = 0; start + bare.length <= full.length; start++) {
    if (bare.every((id, i) => full[start + i] === id)) return start;
  }
  throw new TokenizerError(
    "cannot truncate: the tokenizer's post-processor does not wrap the text in special tokens",
  );
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new TokenizerError(`tokenizer.json is not valid JSON: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
