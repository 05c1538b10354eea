import { z } from "zod";
import { InvalidRequestError } from "./errors.ts";
import { hasRoundedIntegers } from "./tensor-codec.ts";

/** Wire types of the Open Inference Protocol (KServe V2 / Triton), JSON encoding. */

const parameters = z.record(z.string(), z.unknown());

export const requestInputSchema = z.object({
  name: z.string().min(1),
  shape: z.array(z.number().int().nonnegative()),
  datatype: z.string().min(1),
  parameters: parameters.optional(),
  // Elements are checked by the codec in one pass; a zod array of a million numbers would double the work.
  data: z.unknown(),
});

export const requestOutputSchema = z.object({
  name: z.string().min(1),
  parameters: parameters.optional(),
});

export const inferRequestSchema = z.object({
  id: z.string().optional(),
  parameters: parameters.optional(),
  inputs: z.array(requestInputSchema).min(1),
  outputs: z.array(requestOutputSchema).optional(),
});

export type InferRequest = z.infer<typeof inferRequestSchema>;
export type RequestInput = z.infer<typeof requestInputSchema>;

export interface ResponseOutput {
  readonly name: string;
  readonly datatype: string;
  readonly shape: readonly number[];
  readonly data: readonly unknown[];
}

export interface InferResponse {
  readonly model_name: string;
  readonly model_version: string;
  readonly id?: string;
  readonly outputs: readonly ResponseOutput[];
}

export interface TensorMetadata {
  readonly name: string;
  readonly datatype: string;
  readonly shape: readonly number[];
}

export interface ModelMetadataResponse {
  readonly name: string;
  readonly versions: readonly string[];
  readonly platform: string;
  readonly inputs: readonly TensorMetadata[];
  readonly outputs: readonly TensorMetadata[];
}

/**
 * Parses a JSON body. With `exactIntegers`, integer literals beyond 2^53 become bigint instead of
 * being rounded; it is slower, so callers use it only when a rounded integer was actually seen.
 */
export function parseJsonBody(body: string, exactIntegers = false): unknown {
  try {
    if (!exactIntegers) return JSON.parse(body);
    return JSON.parse(body, (_key, value, context?: { source?: string }) =>
      typeof value === "number" &&
      !Number.isSafeInteger(value) &&
      context?.source !== undefined &&
      /^-?\d+$/.test(context.source)
        ? BigInt(context.source)
        : value,
    );
  } catch (error) {
    throw new InvalidRequestError(`request body is not valid JSON: ${(error as Error).message}`);
  }
}

/**
 * Parses and validates a JSON document that carries V2 tensors. The fast plain parse runs first; only
 * when an INT64/UINT64 tensor turns out to hold a rounded integer is the text parsed again, exactly.
 */
export function parseTensorDocument<T>(
  text: string,
  validate: (json: unknown) => T,
  tensorsOf: (document: T) => readonly RequestInput[],
): T {
  const document = validate(parseJsonBody(text));
  return hasRoundedIntegers(tensorsOf(document)) ? validate(parseJsonBody(text, true)) : document;
}

/** An infer request body, as every V2 server here receives it. */
export function parseInferRequestBody(body: string): InferRequest {
  if (body.length === 0)
    throw new InvalidRequestError("request body is empty; send a V2 infer request as JSON");
  return parseTensorDocument(body, parseInferRequest, (request) => request.inputs);
}

/** Validates a parsed body as an infer request; the message names the first offending field. */
export function parseInferRequest(body: unknown): InferRequest {
  const result = inferRequestSchema.safeParse(body);
  if (!result.success) throw new InvalidRequestError(describeZodError(result.error));
  return result.data;
}

export function describeZodError(error: z.ZodError): string {
  const issue = error.issues[0];
  if (issue === undefined) return "invalid request";
  const path = issue.path
    .map((segment, index) =>
      typeof segment === "number" ? `[${segment}]` : `${index ? "." : ""}${String(segment)}`,
    )
    .join("");
  return path ? `${path}: ${issue.message}` : issue.message;
}
