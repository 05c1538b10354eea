import * as z from "zod";
import { InvalidRequestError } from "./errors.ts";
import { type ListRead, readFloat32List, ScratchBuffer } from "./float32-json.ts";
import { elementCount } from "./signature.ts";
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
  return (
    parseFloat32Request(body) ?? parseTensorDocument(body, validateInferRequest, (request) => request.inputs)
  );
}

/** The hand check first (the schema's own result, without zod's cost); zod for the rest and its message. */
function validateInferRequest(json: unknown): InferRequest {
  return plainInferRequest(json) ?? parseInferRequest(json);
}

/** Below this size JSON.parse is as quick as the fast path's extra steps. */
const FAST_PATH_MIN_CHARS = 1024;

const bodyScratch = new ScratchBuffer(64 * 1024, 8 * 1024 * 1024);
/** The numbers of a body's data lists, before each input's own array is cut from them. */
let floatScratch = new Float32Array(16 * 1024);
const FLOAT_SCRATCH_LIMIT = 2 * 1024 * 1024;

/**
 * The text's bytes, then a 0 that ends any scan. A non-ASCII character takes two or more bytes in
 * UTF-8: then fewer characters fit, or a byte of 0x80 or more is among them, which the scan refuses.
 */
function bodyBytes(text: string): Buffer | undefined {
  const target = bodyScratch.take(text.length + 1);
  if (target.write(text, 0, text.length, "utf8") !== text.length) return undefined;
  target[text.length] = 0;
  return target;
}

/** Room for every number a body of this length can hold: each takes a character and a separator. */
function floatsFor(length: number): Float32Array {
  const needed = (length >> 1) + 1;
  if (needed <= floatScratch.length) return floatScratch;
  const floats = new Float32Array(needed);
  if (needed <= FLOAT_SCRATCH_LIMIT) floatScratch = floats;
  return floats;
}

/**
 * The fast path for the common large request: FP32 inputs whose `data` is a flat list of numbers.
 * One scan of the body's bytes finds those lists and reads them (see float32-json.ts); JSON.parse
 * sees only the rest. Any request it is not sure of, valid or not, gets undefined and takes the
 * general path, so results and error messages are the general path's.
 */
function parseFloat32Request(body: string): InferRequest | undefined {
  if (body.length < FAST_PATH_MIN_CHARS) return undefined;
  const bytes = bodyBytes(body);
  if (bytes === undefined) return undefined;
  const scan = new InferBodyScan(bytes, body.length, floatsFor(body.length));
  if (!scan.run() || scan.spans.every((span) => span === undefined)) return undefined;
  const { spans, floats } = scan;
  let skeleton = "";
  let copied = 0;
  for (const span of spans) {
    if (span === undefined) continue;
    skeleton += `${body.slice(copied, span.start)}0`;
    copied = span.end;
  }
  skeleton += body.slice(copied);
  let request: InferRequest | undefined;
  try {
    request = plainInferRequest(JSON.parse(skeleton));
  } catch {
    return undefined;
  }
  if (request === undefined || request.inputs.length !== spans.length) return undefined;
  const inputs: RequestInput[] = [];
  for (const [index, input] of request.inputs.entries()) {
    const span = spans[index];
    if (span === undefined) {
      inputs.push(input);
      continue;
    }
    if (input.data !== 0) return undefined;
    if (input.datatype !== "FP32") {
      inputs.push({ ...input, data: JSON.parse(body.slice(span.start, span.end)) });
      continue;
    }
    if (elementCount(input.shape) !== span.count) return undefined;
    inputs.push({ ...input, data: floats.slice(span.offset, span.offset + span.count) });
  }
  return hasRoundedIntegers(inputs) ? undefined : { ...request, inputs };
}

/** One input's `data` list: where its text is, and where the scan put its numbers. */
interface DataSpan {
  readonly start: number;
  readonly end: number;
  readonly offset: number;
  readonly count: number;
}

const MAX_SCAN_DEPTH = 64;
const TAB = 9;
const NEWLINE = 10;
const RETURN = 13;
const SPACE = 32;
const QUOTE = 34;
const COMMA = 44;
const COLON = 58;
const OPEN_BRACKET = 91;
const BACKSLASH = 92;
const CLOSE_BRACKET = 93;
const OPEN_BRACE = 123;
const CLOSE_BRACE = 125;
const FIRST_NON_ASCII = 0x80;

type Role = "document" | "inputs" | "input" | "data" | "other";

/** Whether `bytes[start, end)` spells `word`, which is ASCII. */
function spells(bytes: Uint8Array, start: number, end: number, word: string): boolean {
  if (end - start !== word.length) return false;
  for (let i = 0; i < word.length; i++) if (bytes[start + i] !== word.charCodeAt(i)) return false;
  return true;
}

/**
 * One pass over an infer request's bytes: the structure, as far as finding each `inputs[i].data`
 * takes, and the numbers of each flat data list, read as they are met. `run` is false when the text
 * is not what the fast path handles: an escape, a non-ASCII byte, a key that matters given twice,
 * deep nesting, or text that is not JSON (JSON.parse on the rest is the final judge of syntax).
 * Data that is not a flat list of numbers gets no span.
 */
class InferBodyScan {
  readonly spans: (DataSpan | undefined)[] = [];
  readonly #bytes: Uint8Array;
  readonly #length: number;
  readonly floats: Float32Array;
  readonly #read: ListRead = { end: 0, count: 0 };
  #used = 0;
  #i = 0;

  constructor(bytes: Uint8Array, length: number, floats: Float32Array) {
    this.#bytes = bytes;
    this.#length = length;
    this.floats = floats;
  }

  run(): boolean {
    if (!this.#value("document", 0)) return false;
    this.#skipSpace();
    return this.#i === this.#length;
  }

  #skipSpace(): void {
    let c = this.#bytes[this.#i];
    while (c === SPACE || c === NEWLINE || c === RETURN || c === TAB) c = this.#bytes[++this.#i];
  }

  /** Moves past a string without escapes or non-ASCII bytes; false otherwise. */
  #skipString(): boolean {
    const bytes = this.#bytes;
    let i = this.#i + 1;
    for (;;) {
      const c = bytes[i] ?? 0;
      if (c === QUOTE) break;
      if (c === BACKSLASH || c >= FIRST_NON_ASCII || i >= this.#length) return false;
      i++;
    }
    this.#i = i + 1;
    return true;
  }

  #value(role: Role, depth: number): boolean {
    if (depth > MAX_SCAN_DEPTH) return false;
    this.#skipSpace();
    const bytes = this.#bytes;
    const c = bytes[this.#i];
    if (role === "data") {
      const read = this.#read;
      if (c === OPEN_BRACKET && readFloat32List(bytes, this.#i, this.floats, this.#used, read)) {
        this.spans.push({ start: this.#i, end: read.end, offset: this.#used, count: read.count });
        this.#used += read.count;
        this.#i = read.end;
        return true;
      }
      // Nested or non-numeric data is JSON.parse's, like everything outside the spans.
      this.spans.push(undefined);
      return this.#value("other", depth);
    }
    if (c === OPEN_BRACE) return this.#object(role, depth);
    if (role === "input") return false;
    if (c === OPEN_BRACKET) {
      this.#i++;
      this.#skipSpace();
      if (bytes[this.#i] === CLOSE_BRACKET) {
        this.#i++;
        return true;
      }
      for (;;) {
        if (!this.#value(role === "inputs" ? "input" : "other", depth + 1)) return false;
        this.#skipSpace();
        const next = bytes[this.#i++];
        if (next === CLOSE_BRACKET) return true;
        if (next !== COMMA) return false;
      }
    }
    if (role === "inputs") return false;
    if (c === QUOTE) return this.#skipString();
    // A number or literal: its syntax is JSON.parse's to check.
    for (;;) {
      const next = bytes[this.#i] ?? 0;
      if (next >= FIRST_NON_ASCII) return false;
      if (this.#i >= this.#length || next === COMMA || next === CLOSE_BRACKET || next === CLOSE_BRACE) break;
      if (next === SPACE || next === NEWLINE || next === RETURN || next === TAB) break;
      this.#i++;
    }
    return true;
  }

  #object(role: Role, depth: number): boolean {
    const bytes = this.#bytes;
    this.#i++;
    this.#skipSpace();
    if (bytes[this.#i] === CLOSE_BRACE) {
      this.#i++;
      if (role === "input") this.spans.push(undefined);
      return true;
    }
    // Only the keys we act on must be unique; JSON.parse settles any other repeat in the skeleton.
    let found = false;
    for (;;) {
      this.#skipSpace();
      if (bytes[this.#i] !== QUOTE) return false;
      const keyStart = this.#i + 1;
      if (!this.#skipString()) return false;
      const keyEnd = this.#i - 1;
      this.#skipSpace();
      if (bytes[this.#i] !== COLON) return false;
      this.#i++;
      let child: Role = "other";
      if (role === "document" && spells(bytes, keyStart, keyEnd, "inputs")) child = "inputs";
      else if (role === "input" && spells(bytes, keyStart, keyEnd, "data")) child = "data";
      if (child !== "other") {
        if (found) return false;
        found = true;
      }
      if (!this.#value(child, depth + 1)) return false;
      this.#skipSpace();
      const next = bytes[this.#i++];
      if (next === CLOSE_BRACE) break;
      if (next !== COMMA) return false;
    }
    if (role === "input" && !found) this.spans.push(undefined);
    return true;
  }
}

type JsonObject = Record<string, unknown>;

const isObject = (value: unknown): value is JsonObject =>
  typeof value === "object" && value !== null && !Array.isArray(value);

/** A `parameters` record the schema passes unchanged (it drops an own `__proto__` key). */
const isPlainRecord = (value: unknown): value is JsonObject =>
  isObject(value) && !Object.hasOwn(value, "__proto__");

/**
 * `inferRequestSchema`'s result for the common, well-formed request, checked by hand (zod's object
 * parse was a tenth of a warm request's overhead); undefined for anything else, which then goes
 * through the schema for its error message. Like the schema, it keeps only the keys it knows.
 */
export function plainInferRequest(json: unknown): InferRequest | undefined {
  if (!isObject(json)) return undefined;
  const { id, parameters, inputs, outputs } = json;
  if (id !== undefined && typeof id !== "string") return undefined;
  if (parameters !== undefined && !isPlainRecord(parameters)) return undefined;
  if (!Array.isArray(inputs) || inputs.length === 0) return undefined;
  const plainInputs: RequestInput[] = [];
  for (const input of inputs) {
    if (!isObject(input)) return undefined;
    const { name, shape, datatype } = input;
    if (typeof name !== "string" || name === "" || typeof datatype !== "string" || datatype === "")
      return undefined;
    if (!Array.isArray(shape) || !shape.every((dim) => Number.isSafeInteger(dim) && dim >= 0))
      return undefined;
    if (!("data" in input) || (input.parameters !== undefined && !isPlainRecord(input.parameters)))
      return undefined;
    plainInputs.push({
      name,
      shape,
      datatype,
      ...(input.parameters === undefined ? {} : { parameters: input.parameters }),
      data: input.data,
    });
  }
  let plainOutputs: InferRequest["outputs"];
  if (outputs !== undefined) {
    if (!Array.isArray(outputs)) return undefined;
    plainOutputs = [];
    for (const output of outputs) {
      if (!isObject(output) || typeof output.name !== "string" || output.name === "") return undefined;
      if (output.parameters !== undefined && !isPlainRecord(output.parameters)) return undefined;
      plainOutputs.push({
        name: output.name,
        ...(output.parameters === undefined ? {} : { parameters: output.parameters }),
      });
    }
  }
  return {
    ...(id === undefined ? {} : { id }),
    ...(parameters === undefined ? {} : { parameters }),
    inputs: plainInputs,
    ...(plainOutputs === undefined ? {} : { outputs: plainOutputs }),
  };
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
