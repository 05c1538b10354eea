import { InvalidRequestError, ResponseTooLargeError } from "#core/errors.ts";
import type { V2Datatype } from "#core/model.ts";
import { fromFloat16Bits, toFloat16Bits } from "#core/tensor/float16.ts";
import { elementCount, formatShape } from "#core/tensor/shape.ts";
import type { NamedTensor, OrtElementType, TensorData } from "#core/tensor/tensor.ts";
import { float32ArrayJson } from "./float32-json.ts";
import type { RequestInput, ResponseOutput } from "./wire.ts";

type Fail = (index: number, value: unknown, expected: string) => InvalidRequestError;

interface Codec {
  readonly datatype: V2Datatype;
  readonly ort: OrtElementType;
  /** The typed array onnxruntime takes the data in (FP16 as its raw bits, BOOL as bytes); none for BYTES. */
  readonly array?: TypedArrayConstructor;
  /** `name`: the input's, for errors. */
  decode(values: readonly unknown[], fail: Fail, name: string): TensorData;
  encode(data: TensorData): unknown[];
}

type SmallIntArray = Int8Array | Int16Array | Int32Array | Uint8Array | Uint16Array | Uint32Array;

export type TypedArrayConstructor =
  | Int8ArrayConstructor
  | Int16ArrayConstructor
  | Int32ArrayConstructor
  | Uint8ArrayConstructor
  | Uint16ArrayConstructor
  | Uint32ArrayConstructor
  | BigInt64ArrayConstructor
  | BigUint64ArrayConstructor
  | Float32ArrayConstructor
  | Float64ArrayConstructor;

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

function integerCodec(
  datatype: V2Datatype,
  ort: OrtElementType,
  TypedArray: TypedArrayConstructor & (new (length: number) => SmallIntArray),
  min: number,
  max: number,
): Codec {
  const expected = `an integer in [${min}, ${max}]`;
  return {
    datatype,
    ort,
    array: TypedArray,
    decode(values, fail) {
      const out = new TypedArray(values.length);
      for (let i = 0; i < values.length; i++) {
        const value = values[i];
        if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
          throw fail(i, value, expected);
        }
        out[i] = value;
      }
      return out;
    },
    encode: (data) => Array.from(data as SmallIntArray),
  };
}

function toBigInt(value: unknown): bigint | undefined {
  if (typeof value === "bigint") return value;
  if (typeof value === "number") return Number.isSafeInteger(value) ? BigInt(value) : undefined;
  if (typeof value === "string" && /^-?\d{1,20}$/.test(value)) return BigInt(value);
  return undefined;
}

function int64Codec(datatype: "INT64" | "UINT64"): Codec {
  const signed = datatype === "INT64";
  const min = signed ? -(2n ** 63n) : 0n;
  const max = signed ? 2n ** 63n - 1n : 2n ** 64n - 1n;
  const expected = `an integer in [${min}, ${max}] (a JSON integer, or a string of digits)`;
  return {
    datatype,
    ort: signed ? "int64" : "uint64",
    array: signed ? BigInt64Array : BigUint64Array,
    decode(values, fail) {
      const out = signed ? new BigInt64Array(values.length) : new BigUint64Array(values.length);
      for (let i = 0; i < values.length; i++) {
        const value = values[i];
        const big = toBigInt(value);
        if (big === undefined || big < min || big > max) throw fail(i, value, expected);
        out[i] = big;
      }
      return out;
    },
    encode(data) {
      const values = data as BigInt64Array | BigUint64Array;
      const out = new Array<unknown>(values.length);
      for (let i = 0; i < values.length; i++) {
        const value = values[i] as bigint;
        // Beyond 2^53 the digits go out verbatim: the JSON stays exact even where JS numbers could not.
        out[i] = value >= -MAX_SAFE && value <= MAX_SAFE ? Number(value) : JSON.rawJSON(value.toString());
      }
      return out;
    },
  };
}

/** JSON has no NaN or Infinity: they travel as the strings Triton and KServe clients use. */
const NON_FINITE: Record<string, number> = {
  NaN: Number.NaN,
  Infinity: Number.POSITIVE_INFINITY,
  "-Infinity": Number.NEGATIVE_INFINITY,
};

function readFloat(value: unknown): number | undefined {
  if (typeof value === "number") return value;
  if (typeof value === "string") return Object.hasOwn(NON_FINITE, value) ? NON_FINITE[value] : undefined;
  if (typeof value === "bigint") return Number(value);
  return undefined;
}

function writeFloat(value: number): unknown {
  // JSON.stringify writes -0 as 0: the sign goes out verbatim.
  if (value === 0 && 1 / value < 0) return JSON.rawJSON("-0");
  return Number.isFinite(value) ? value : String(value);
}

function floatCodec(
  datatype: "FP32" | "FP64",
  ort: OrtElementType,
  TypedArray: Float32ArrayConstructor | Float64ArrayConstructor,
): Codec {
  const expected = 'a number (or "NaN", "Infinity", "-Infinity")';
  return {
    datatype,
    ort,
    array: TypedArray,
    decode(values, fail) {
      const out = new TypedArray(values.length);
      for (let i = 0; i < values.length; i++) {
        const value = values[i];
        if (typeof value === "number") {
          out[i] = value;
          continue;
        }
        const float = readFloat(value);
        if (float === undefined) throw fail(i, value, expected);
        out[i] = float;
      }
      return out;
    },
    encode(data) {
      const values = data as Float32Array | Float64Array;
      const out = new Array<unknown>(values.length);
      for (let i = 0; i < values.length; i++) out[i] = writeFloat(values[i] as number);
      return out;
    },
  };
}

const fp16Codec: Codec = {
  datatype: "FP16",
  ort: "float16",
  array: Uint16Array,
  decode(values, fail) {
    const out = new Uint16Array(values.length);
    for (let i = 0; i < values.length; i++) {
      const float = readFloat(values[i]);
      if (float === undefined) throw fail(i, values[i], 'a number (or "NaN", "Infinity", "-Infinity")');
      out[i] = toFloat16Bits(float);
    }
    return out;
  },
  encode(data) {
    const bits = data as Uint16Array;
    const out = new Array<unknown>(bits.length);
    for (let i = 0; i < bits.length; i++) out[i] = writeFloat(fromFloat16Bits(bits[i] as number));
    return out;
  },
};

const boolCodec: Codec = {
  datatype: "BOOL",
  ort: "bool",
  array: Uint8Array,
  decode(values, fail) {
    const out = new Uint8Array(values.length);
    for (let i = 0; i < values.length; i++) {
      const value = values[i];
      if (typeof value !== "boolean") throw fail(i, value, "true or false");
      out[i] = value ? 1 : 0;
    }
    return out;
  },
  encode: (data) => Array.from(data as Uint8Array, (value) => value !== 0),
};

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** A BYTES element's bytes as text; `element` (`input 'x' element 2`) names it in the error. */
export function utf8Text(bytes: Uint8Array, element: string): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw new InvalidRequestError(`${element}: BYTES elements must be UTF-8 text here`);
  }
}

const bytesCodec: Codec = {
  datatype: "BYTES",
  ort: "string",
  decode(values, fail, name) {
    // Elements from the binary data extension are bytes: onnxruntime-node takes them as UTF-8 text.
    const texts = values.some((value) => value instanceof Uint8Array)
      ? values.map((value, i) =>
          value instanceof Uint8Array ? utf8Text(value, `input '${name}' element ${i}`) : value,
        )
      : values;
    for (let i = 0; i < texts.length; i++) {
      const value = texts[i];
      // onnxruntime cuts strings at NUL; refusing them beats silently truncating.
      if (typeof value !== "string" || value.includes("\u0000"))
        throw fail(i, value, "a string without NUL characters");
    }
    return texts as readonly string[];
  },
  encode: (data) => [...(data as readonly string[])],
};

const CODECS: Record<V2Datatype, Codec> = {
  BOOL: boolCodec,
  UINT8: integerCodec("UINT8", "uint8", Uint8Array, 0, 0xff),
  UINT16: integerCodec("UINT16", "uint16", Uint16Array, 0, 0xffff),
  UINT32: integerCodec("UINT32", "uint32", Uint32Array, 0, 0xffffffff),
  UINT64: int64Codec("UINT64"),
  INT8: integerCodec("INT8", "int8", Int8Array, -0x80, 0x7f),
  INT16: integerCodec("INT16", "int16", Int16Array, -0x8000, 0x7fff),
  INT32: integerCodec("INT32", "int32", Int32Array, -0x80000000, 0x7fffffff),
  INT64: int64Codec("INT64"),
  FP16: fp16Codec,
  FP32: floatCodec("FP32", "float32", Float32Array),
  FP64: floatCodec("FP64", "float64", Float64Array),
  BYTES: bytesCodec,
};

const BY_ORT_TYPE = new Map<string, Codec>(Object.values(CODECS).map((codec) => [codec.ort, codec]));

export function isV2Datatype(value: string): value is V2Datatype {
  return Object.hasOwn(CODECS, value);
}

export function ortTypeOf(datatype: V2Datatype): OrtElementType {
  return CODECS[datatype].ort;
}

/** The V2 datatype of an onnxruntime element type. */
export function datatypeOfOrtType(type: OrtElementType): V2Datatype {
  const codec = BY_ORT_TYPE.get(type);
  if (codec === undefined) throw new Error(`unsupported onnxruntime element type ${type}`);
  return codec.datatype;
}

/** The typed array a fixed-size datatype's data takes (FP16 as raw bits, BOOL as 0/1 bytes). */
export function typedArrayOf(datatype: Exclude<V2Datatype, "BYTES">): TypedArrayConstructor {
  return CODECS[datatype].array as TypedArrayConstructor;
}

function describe(value: unknown): string {
  if (Array.isArray(value)) return "an array";
  if (value === null) return "null";
  if (typeof value === "string")
    return `the string ${JSON.stringify(value.length > 32 ? `${value.slice(0, 32)}…` : value)}`;
  if (typeof value === "bigint") return String(value);
  if (typeof value === "object") return "an object";
  return `${typeof value} ${String(value)}`;
}

/**
 * Flattens nested row-major arrays. Triton and KServe accept both `[1,2,3,4]` and
 * `[[1,2],[3,4]]`; a flat array is returned as is, without copying.
 */
function flatten(name: string, data: unknown): readonly unknown[] {
  if (!Array.isArray(data)) {
    throw new InvalidRequestError(`input '${name}': data must be an array, got ${describe(data)}`);
  }
  if (!data.some(Array.isArray)) return data;
  const flat: unknown[] = [];
  const visit = (node: unknown, depth: number) => {
    if (!Array.isArray(node)) {
      flat.push(node);
      return;
    }
    if (depth > 32) throw new InvalidRequestError(`input '${name}': data is nested more than 32 levels deep`);
    for (const child of node) visit(child, depth + 1);
  };
  visit(data, 0);
  return flat;
}

/**
 * Whether an INT64 or UINT64 input holds a JSON number beyond 2^53, which JSON.parse has rounded:
 * such a request must be parsed again with exact integers before it is decoded.
 */
export function hasRoundedIntegers(inputs: readonly RequestInput[]): boolean {
  return inputs.some(
    (input) =>
      (input.datatype === "INT64" || input.datatype === "UINT64") &&
      Array.isArray(input.data) &&
      holdsRoundedInteger(input.data, 0),
  );
}

/** Walks nested lists in place (`.flat(32)` copied every INT64 input), to the same 32 levels. */
function holdsRoundedInteger(values: readonly unknown[], depth: number): boolean {
  for (let i = 0; i < values.length; i++) {
    const value = values[i];
    if (Array.isArray(value)) {
      if (depth < 32 && holdsRoundedInteger(value, depth + 1)) return true;
    } else if (typeof value === "number" && Math.abs(value) > Number.MAX_SAFE_INTEGER) return true;
  }
  return false;
}

/**
 * Decodes one V2 input's `data` into the typed array onnxruntime takes. The input's datatype must
 * already be checked against the signature; this checks the element count and every element.
 */
export function decodeInput(input: RequestInput): NamedTensor {
  if (!isV2Datatype(input.datatype)) {
    throw new InvalidRequestError(`input '${input.name}': unsupported datatype ${input.datatype}`);
  }
  const codec = CODECS[input.datatype];
  const expectedCount = elementCount(input.shape);
  // Already decoded: by the request parser's FP32 fast path, or from the binary data extension's bytes.
  if (codec.array !== undefined && input.data instanceof codec.array && input.data.length === expectedCount) {
    return { name: input.name, type: codec.ort, dims: input.shape, data: input.data };
  }
  const values = flatten(input.name, input.data);
  if (values.length !== expectedCount) {
    throw new InvalidRequestError(
      `input '${input.name}': data has ${values.length} elements but shape ${formatShape(input.shape)} needs ${expectedCount}`,
    );
  }
  const fail: Fail = (index, value, expected) =>
    new InvalidRequestError(
      `input '${input.name}' element ${index}: expected ${expected} for ${codec.datatype}, got ${describe(value)}`,
    );
  return {
    name: input.name,
    type: codec.ort,
    dims: input.shape,
    data: codec.decode(values, fail, input.name),
  };
}

/** Encodes an onnxruntime output as a V2 response output with flat row-major data. */
export function encodeOutput(tensor: NamedTensor): ResponseOutput {
  const codec = BY_ORT_TYPE.get(tensor.type);
  if (codec === undefined)
    throw new Error(`output '${tensor.name}' has unsupported element type ${tensor.type}`);
  return {
    name: tensor.name,
    datatype: codec.datatype,
    shape: [...tensor.dims],
    data: codec.encode(tensor.data),
  };
}

/** An infer response whose outputs are still onnxruntime's tensors, until inferResponseJson writes them. */
export interface TensorResponse {
  readonly model_name: string;
  readonly model_version?: string;
  readonly id?: string;
  readonly outputs: readonly NamedTensor[];
  /** The most bytes its JSON may take; inferResponseJson refuses a larger one (413). Not written. */
  readonly maxBytes?: number;
}

/** The fewest bytes of JSON one element takes in a data array, its comma counted: `0,`, `"",`, `true,`. */
function minElementJsonBytes(type: OrtElementType): number {
  return type === "bool" ? 5 : type === "string" ? 3 : 2;
}

/** The fewest bytes an output's data list takes; refused (413) when that alone passes `limit`. */
export function outputJsonFloor(name: string, elements: number, type: OrtElementType, limit: number): number {
  const floor = elements * minElementJsonBytes(type);
  if (floor > limit)
    throw new ResponseTooLargeError(`output '${name}' has ${elements} elements; its JSON would`, limit);
  return floor;
}

/**
 * V2 tensors as a JSON array, as JSON.stringify writes encodeOutput's results, but with FP32 and FP16
 * data in their short float32 form (float32-json.ts): shorter text in about half the time. FP32 data
 * is written straight from its Float32Array.
 */
export function tensorListJson(tensors: readonly NamedTensor[]): string {
  return `[${tensors.map(tensorJson).join(",")}]`;
}

/** One output's JSON, refused (413) before it is written when its element count alone passes `limit`. */
export function outputJson(tensor: NamedTensor, limit: number): string {
  outputJsonFloor(tensor.name, tensor.data.length, tensor.type, limit);
  return tensorJson(tensor);
}

function tensorJson(tensor: NamedTensor): string {
  // FP16 is widened by its codec first; FP32 is written from onnxruntime's own array.
  const floats =
    tensor.type === "float32"
      ? tensor.data
      : tensor.type === "float16"
        ? encodeOutput(tensor).data
        : undefined;
  const fast =
    floats === undefined ? undefined : float32ArrayJson(floats as Float32Array | readonly unknown[]);
  if (fast === undefined) return JSON.stringify(encodeOutput(tensor));
  const datatype = tensor.type === "float32" ? "FP32" : "FP16";
  return `{"name":${JSON.stringify(tensor.name)},"datatype":"${datatype}","shape":[${tensor.dims.join(",")}],"data":${fast}}`;
}

/**
 * A response's JSON up to its outputs, `{"model_name":...,"model_version":...,"id":...`, in the order
 * the response object has its keys, as JSON.stringify would write them.
 */
export function responseHead(response: TensorResponse): string {
  let head = `{"model_name":${JSON.stringify(response.model_name)}`;
  if (response.model_version !== undefined)
    head += `,"model_version":${JSON.stringify(response.model_version)}`;
  if (response.id !== undefined) head += `,"id":${JSON.stringify(response.id)}`;
  return head;
}

/** An infer response's JSON text: the document JSON.stringify gives of the encoded response, FP32 data in short form. */
export function inferResponseJson(response: TensorResponse): string {
  const head = responseHead(response);
  if (response.maxBytes === undefined) return `${head},"outputs":${tensorListJson(response.outputs)}}`;
  return limitedOutputsJson(`${head},"outputs":[`, response.outputs, response.maxBytes);
}

/**
 * The outputs written after `head`, refusing them (413) before one is written whose element count
 * alone takes the text past `limit`, and once the text is past it. Nothing written is kept then.
 */
function limitedOutputsJson(head: string, outputs: readonly NamedTensor[], limit: number): string {
  let text = head;
  for (let i = 0; i < outputs.length; i++) {
    const tensor = outputs[i] as NamedTensor;
    const floor = outputJsonFloor(tensor.name, tensor.data.length, tensor.type, limit);
    // A UTF-16 unit is at least one UTF-8 byte: text.length never overstates the bytes.
    if (text.length + floor > limit) throw outputsTooLarge(tensor.name, text.length + floor, limit);
    text += i === 0 ? tensorJson(tensor) : `,${tensorJson(tensor)}`;
    if (text.length > limit) throw outputsTooLarge(tensor.name, text.length, limit);
  }
  text += "]}";
  // Three bytes a unit at most: the exact count only where that bound reaches the limit.
  const bytes = text.length * 3 <= limit ? text.length : Buffer.byteLength(text, "utf8");
  if (bytes > limit)
    throw new ResponseTooLargeError(`the response's JSON is ${bytes} bytes; it would`, limit);
  return text;
}

function outputsTooLarge(name: string, bytes: number, limit: number): ResponseTooLargeError {
  return new ResponseTooLargeError(
    `the response's JSON takes at least ${bytes} bytes by output '${name}'; it would`,
    limit,
  );
}
