import { InvalidRequestError } from "#core/errors.ts";
import { elementCount } from "#core/tensor/shape.ts";
import { OPEN_BRACE, OPEN_BRACKET, QUOTE } from "./json-bytes.ts";
import { bodyBytes, floatsFor, InferBodyScan, readPlainFloat32Request } from "./request-scan.ts";
import { hasRoundedIntegers } from "./tensor-codec.ts";
import { describeZodError, type InferRequest, inferRequestSchema, type RequestInput } from "./wire.ts";

/** Reading an infer request body: the fast FP32 readers first, then JSON.parse and the wire schema. */

/** Deepest nesting a body may have: V2 data of rank 32 as nested lists sits 34 deep in a request. */
export const MAX_JSON_DEPTH = 64;

/** A bracket, brace or quote: the only characters the depth scan acts on. */
const STRUCTURAL = /[[\]{}"]/g;
/** Where a string may end: its closing quote, or an escape to step over. */
const STRING_STOP = /["\\]/g;

/**
 * Whether JSON text nests arrays and objects deeper than `limit`; brackets inside strings (escaped
 * quotes included) are not counted. One pass, no allocation: the regexps jump between structural
 * characters (`test` builds no match), 5x a charCodeAt loop here (0.7 vs 3.5 ms per MB of numbers).
 * Syntax is JSON.parse's to judge: an unbalanced text only has to stay under the limit.
 */
export function nestsDeeperThan(text: string, limit: number): boolean {
  let depth = 0;
  STRUCTURAL.lastIndex = 0;
  while (STRUCTURAL.test(text)) {
    const at = STRUCTURAL.lastIndex - 1;
    const c = text.charCodeAt(at);
    if (c === OPEN_BRACKET || c === OPEN_BRACE) {
      if (++depth > limit) return true;
    } else if (c === QUOTE) {
      STRING_STOP.lastIndex = at + 1;
      for (;;) {
        if (!STRING_STOP.test(text)) return false;
        const stop = STRING_STOP.lastIndex - 1;
        if (text.charCodeAt(stop) === QUOTE) break;
        STRING_STOP.lastIndex = stop + 2;
      }
      STRUCTURAL.lastIndex = STRING_STOP.lastIndex;
    } else {
      depth--;
    }
  }
  return false;
}

/**
 * Parses a JSON body. With `exactIntegers`, integer literals beyond 2^53 become bigint instead of
 * being rounded; it is slower, so callers use it only when a rounded integer was actually seen.
 */
export function parseJsonBody(body: string, exactIntegers = false): unknown {
  // JSON.parse recurses per level: 5 million `[` took it 4 s before any check could run.
  if (nestsDeeperThan(body, MAX_JSON_DEPTH))
    throw new InvalidRequestError(
      `request body nests arrays and objects more than ${MAX_JSON_DEPTH} deep; ` +
        "send tensor data as a flat list with its shape",
    );
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
export function validateInferRequest(json: unknown): InferRequest {
  return plainInferRequest(json) ?? parseInferRequest(json);
}

/** Below this size JSON.parse is as quick as the fast path's extra steps. */
const FAST_PATH_MIN_CHARS = 1024;

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
  const floats = floatsFor(body.length);
  const plain = readPlainFloat32Request(body, bytes, floats);
  if (plain !== undefined) return plain;
  const scan = new InferBodyScan(bytes, body.length, floats);
  if (!scan.run() || scan.spans.every((span) => span === undefined)) return undefined;
  const { spans } = scan;
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
    if (input.parameters !== undefined && !isPlainRecord(input.parameters)) return undefined;
    // An input sent as binary data has no `data`: its bytes follow the JSON header.
    if (!("data" in input) && input.parameters?.binary_data_size === undefined) return undefined;
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
