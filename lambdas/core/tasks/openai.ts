import * as z from "zod/mini";
import { InvalidRequestError } from "#core/errors.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import { MAX_JSON_DEPTH, nestsDeeperThan } from "#core/v2/parse.ts";
import { describeZodError } from "#core/v2/wire.ts";
import { MAX_TEXTS } from "./text-task.ts";

/**
 * OpenAI's embeddings API (`POST /v1/embeddings`, `GET /v1/models`) over feature-extraction versions, in
 * the shapes the `openai` clients send and read. Not strict: the clients add fields (`user`) that do
 * not change the answer.
 */
const embeddingsRequestSchema = z.object({
  model: z.string().check(z.minLength(1), z.maxLength(200)),
  input: z.union([z.string(), z.array(z.string()).check(z.minLength(1), z.maxLength(MAX_TEXTS))]),
  // The JavaScript client asks for base64 unless told otherwise, and decodes it itself.
  encoding_format: z.optional(z.enum(["float", "base64"])),
  dimensions: z.optional(z.number()),
});

export interface EmbeddingsRequest {
  readonly model: string;
  /** A version number or an alias after `:`; undefined for the model's default. */
  readonly version: string | undefined;
  readonly texts: readonly string[];
  readonly format: "float" | "base64";
}

/** `{"model": "name[:version]", "input": "text" | ["text", ...], "encoding_format"?}`. */
export function parseEmbeddingsRequest(body: string): EmbeddingsRequest {
  // As every JSON body: a body nested millions deep is refused by a linear scan, not by JSON.parse.
  if (nestsDeeperThan(body, MAX_JSON_DEPTH))
    throw new InvalidRequestError(`body nests deeper than ${MAX_JSON_DEPTH} levels`);
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    throw new InvalidRequestError('body must be JSON like {"model": "minilm", "input": ["some text"]}');
  }
  const parsed = embeddingsRequestSchema.safeParse(json);
  if (!parsed.success) throw new InvalidRequestError(describeZodError(parsed.error));
  const { model, input, encoding_format: format, dimensions } = parsed.data;
  const texts = typeof input === "string" ? [input] : input;
  const [name = "", version] = model.split(":", 2);
  if (dimensions !== undefined) {
    throw new InvalidRequestError("dimensions is not supported: the model's embedding size is its own");
  }
  return { model: name, version, texts, format: format ?? "float" };
}

/** OpenAI's list of embeddings, each row of `embedding` ([N, D]) as floats or as little-endian float32 base64. */
export function embeddingsResponse(
  model: string,
  embedding: NamedTensor,
  tokenCount: number,
  format: "float" | "base64",
) {
  const values = embedding.data as Float32Array;
  const [rows = 0, width = 0] = embedding.dims;
  const data = Array.from({ length: rows }, (_, index) => {
    const row = values.subarray(index * width, (index + 1) * width);
    return {
      object: "embedding",
      index,
      embedding:
        format === "base64"
          ? Buffer.from(row.buffer, row.byteOffset, row.byteLength).toString("base64")
          : Array.from(row),
    };
  });
  return { object: "list", data, model, usage: { prompt_tokens: tokenCount, total_tokens: tokenCount } };
}

/** `GET /v1/models`: the feature-extraction models, as OpenAI lists models. */
export function modelsResponse(models: readonly { readonly name: string; readonly createdAt: string }[]) {
  return {
    object: "list",
    data: models.map((model) => ({
      id: model.name,
      object: "model",
      created: Math.floor(Date.parse(model.createdAt) / 1000),
      owned_by: "serverless-maas",
    })),
  };
}

/** OpenAI's error body, which its clients read `message` from. */
export function openAiError(status: number, message: string) {
  const type = status >= 500 ? "server_error" : "invalid_request_error";
  return { error: { message, type, param: null, code: status === 404 ? "model_not_found" : null } };
}
