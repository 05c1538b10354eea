/**
 * A client's side of the V2 binary tensor data extension (Triton's docs/protocol/extension_binary_data.md,
 * which KServe follows), written from the spec alone so that it checks the server's codec instead of
 * sharing it. A body is a JSON header of `Inference-Header-Content-Length` bytes, then the raw data of every
 * tensor whose `parameters.binary_data_size` says how many bytes it takes, in the header's order:
 * little-endian, row-major, unpadded; BOOL one byte (0 or 1), FP16 its half bits, a BYTES element a 4-byte
 * little-endian length and its bytes.
 */
import { getFloat16, setFloat16 } from "@petamoriken/float16";
import * as z from "zod";
import { V2_DATATYPES, type V2Datatype } from "../../models/zoo.ts";
import { parseExactJson } from "./onnxruntime-reference.ts";

/**
 * A tensor's elements as this client holds them, the same whichever way they travel: BOOL as a Uint8Array
 * of 0 and 1, FP16 as a Uint16Array of half bits, INT64/UINT64 as bigint arrays, BYTES as each element's
 * bytes (strings are accepted going out and sent as UTF-8).
 */
export type TensorValues =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | BigUint64Array
  | BigInt64Array
  | Float32Array
  | Float64Array
  | readonly Uint8Array[]
  | readonly string[];

export interface ClientTensor {
  readonly name: string;
  readonly datatype: V2Datatype;
  readonly shape: readonly number[];
  readonly data: TensorValues;
  /** Sent as raw bytes after the JSON header, or as a JSON `data` list. */
  readonly binary: boolean;
}

export interface RequestedOutput {
  readonly name: string;
  readonly parameters?: Readonly<Record<string, unknown>>;
}

export interface ClientRequest {
  readonly id?: string;
  readonly inputs: readonly ClientTensor[];
  readonly outputs?: readonly RequestedOutput[];
  readonly parameters?: Readonly<Record<string, unknown>>;
}

export interface EncodedRequest {
  readonly body: Buffer;
  /** The value of `Inference-Header-Content-Length`. */
  readonly headerLength: number;
}

export interface DecodedOutput {
  readonly name: string;
  readonly datatype: V2Datatype;
  readonly shape: readonly number[];
  readonly parameters: Readonly<Record<string, unknown>> | undefined;
  /** Whether `data` was in the JSON header; false when the output came as binary data. */
  readonly hadJsonData: boolean;
  /** The raw bytes of a binary output; undefined for a JSON one. */
  readonly bytes: Buffer | undefined;
  /** The elements, in the form `TensorValues` describes (BYTES as Uint8Arrays), whichever way they came. */
  readonly values: TensorValues;
}

export interface DecodedResponse {
  readonly model_name: string;
  readonly model_version: string | undefined;
  readonly id: string | undefined;
  readonly outputs: readonly DecodedOutput[];
}

/** Bytes per element of the fixed-size datatypes. */
const ELEMENT_SIZE: Readonly<Record<Exclude<V2Datatype, "BYTES">, 1 | 2 | 4 | 8>> = {
  BOOL: 1,
  UINT8: 1,
  INT8: 1,
  UINT16: 2,
  INT16: 2,
  FP16: 2,
  UINT32: 4,
  INT32: 4,
  FP32: 4,
  UINT64: 8,
  INT64: 8,
  FP64: 8,
};

type FixedArray = Exclude<TensorValues, readonly Uint8Array[] | readonly string[]>;
type FixedArrayType = new (length: number) => FixedArray;

/** The array type that holds each fixed-size datatype's elements. */
const ARRAY_TYPE: Readonly<Record<Exclude<V2Datatype, "BYTES">, FixedArrayType>> = {
  BOOL: Uint8Array,
  UINT8: Uint8Array,
  INT8: Int8Array,
  UINT16: Uint16Array,
  INT16: Int16Array,
  FP16: Uint16Array,
  UINT32: Uint32Array,
  INT32: Int32Array,
  FP32: Float32Array,
  UINT64: BigUint64Array,
  INT64: BigInt64Array,
  FP64: Float64Array,
};

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Bytes per element of `datatype`, or undefined for BYTES, whose elements carry their own lengths. */
export function elementSize(datatype: V2Datatype): number | undefined {
  return datatype === "BYTES" ? undefined : ELEMENT_SIZE[datatype];
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((product, dim) => product * dim, 1);
}

function fixedArray(datatype: Exclude<V2Datatype, "BYTES">, values: TensorValues): FixedArray {
  if (!(values instanceof ARRAY_TYPE[datatype]))
    throw new Error(`${datatype} elements are held in a ${ARRAY_TYPE[datatype].name}`);
  return values as FixedArray;
}

function bytesElements(values: TensorValues): Uint8Array[] {
  if (!Array.isArray(values)) throw new Error("BYTES elements are held as strings or Uint8Arrays");
  return values.map((element: string | Uint8Array) =>
    typeof element === "string" ? utf8.encode(element) : element,
  );
}

/**
 * The elements' bytes as the extension carries them. Fixed-size elements are written through an
 * unsigned view of their own bits, so NaN payloads and -0 go out exactly as held.
 */
export function tensorBytes(datatype: V2Datatype, values: TensorValues): Buffer {
  if (datatype === "BYTES") {
    const elements = bytesElements(values);
    const out = Buffer.alloc(elements.reduce((total, element) => total + 4 + element.length, 0));
    let offset = 0;
    for (const element of elements) {
      offset = out.writeUInt32LE(element.length, offset);
      out.set(element, offset);
      offset += element.length;
    }
    return out;
  }
  const array = fixedArray(datatype, values);
  if (datatype === "BOOL" && (array as Uint8Array).some((value) => value > 1))
    throw new Error("BOOL elements are 0 or 1");
  const size = ELEMENT_SIZE[datatype];
  const out = Buffer.alloc(array.length * size);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  const bits = unsignedView(array, size);
  if (bits instanceof BigUint64Array) {
    for (let i = 0; i < bits.length; i++) view.setBigUint64(i * 8, bits[i]!, true);
  } else if (size === 4) {
    for (let i = 0; i < bits.length; i++) view.setUint32(i * 4, bits[i]!, true);
  } else if (size === 2) {
    for (let i = 0; i < bits.length; i++) view.setUint16(i * 2, bits[i]!, true);
  } else {
    out.set(bits);
  }
  return out;
}

/** The elements' own bits, as unsigned integers of their size, over the same memory. */
function unsignedView(
  array: FixedArray,
  size: number,
): Uint8Array | Uint16Array | Uint32Array | BigUint64Array {
  const { buffer, byteOffset, length } = array;
  if (size === 8) return new BigUint64Array(buffer, byteOffset, length);
  if (size === 4) return new Uint32Array(buffer, byteOffset, length);
  if (size === 2) return new Uint16Array(buffer, byteOffset, length);
  return new Uint8Array(buffer, byteOffset, length);
}

/** Reads `bytes` as `datatype` elements; throws when they do not divide into whole elements. */
export function valuesFromBytes(datatype: V2Datatype, bytes: Uint8Array): TensorValues {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (datatype === "BYTES") {
    const elements: Uint8Array[] = [];
    let offset = 0;
    while (offset < bytes.length) {
      if (offset + 4 > bytes.length) throw new Error(`a BYTES length at byte ${offset} is cut short`);
      const length = view.getUint32(offset, true);
      offset += 4;
      if (offset + length > bytes.length)
        throw new Error(`a BYTES element of ${length} bytes at byte ${offset} runs past the data`);
      elements.push(Uint8Array.from(bytes.subarray(offset, offset + length)));
      offset += length;
    }
    return elements;
  }
  const size = ELEMENT_SIZE[datatype];
  if (bytes.length % size !== 0)
    throw new Error(`${bytes.length} bytes are not whole ${datatype} elements of ${size} bytes`);
  const array = new ARRAY_TYPE[datatype](bytes.length / size);
  const bits = unsignedView(array, size);
  if (bits instanceof BigUint64Array) {
    for (let i = 0; i < bits.length; i++) bits[i] = view.getBigUint64(i * 8, true);
  } else if (size === 4) {
    for (let i = 0; i < bits.length; i++) bits[i] = view.getUint32(i * 4, true);
  } else if (size === 2) {
    for (let i = 0; i < bits.length; i++) bits[i] = view.getUint16(i * 2, true);
  } else {
    bits.set(bytes);
  }
  return array;
}

/** A float as V2 JSON writes it: the non-finite ones as the strings Triton and KServe use, -0 with its sign. */
function jsonFloat(value: number): unknown {
  if (Number.isNaN(value)) return "NaN";
  if (value === Number.POSITIVE_INFINITY) return "Infinity";
  if (value === Number.NEGATIVE_INFINITY) return "-Infinity";
  return Object.is(value, -0) ? JSON.rawJSON("-0") : value;
}

/** The elements as a V2 JSON `data` list; INT64/UINT64 beyond 2^53 as exact digits. */
export function jsonData(datatype: V2Datatype, values: TensorValues): unknown[] {
  if (datatype === "BYTES") return bytesElements(values).map((element) => strictUtf8.decode(element));
  const array = fixedArray(datatype, values);
  switch (datatype) {
    case "BOOL":
      return Array.from(array as Uint8Array, (value) => value === 1);
    case "INT64":
    case "UINT64":
      return Array.from(array as BigInt64Array, (value) =>
        value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER)
          ? Number(value)
          : JSON.rawJSON(value.toString()),
      );
    case "FP16": {
      const view = new DataView(new ArrayBuffer(2));
      return Array.from(array as Uint16Array, (bits) => {
        view.setUint16(0, bits, true);
        return jsonFloat(getFloat16(view, 0, true));
      });
    }
    case "FP32":
    case "FP64":
      return Array.from(array as Float64Array, jsonFloat);
    default:
      return Array.from(array as Int32Array);
  }
}

const NON_FINITE: Readonly<Record<string, number>> = {
  NaN: Number.NaN,
  Infinity: Number.POSITIVE_INFINITY,
  "-Infinity": Number.NEGATIVE_INFINITY,
};

/** An element for an error message; JSON.stringify cannot write bigints. */
function show(value: unknown): string {
  return typeof value === "bigint" ? String(value) : JSON.stringify(value);
}

function jsonNumber(value: unknown): number {
  if (typeof value === "number") return value;
  if (typeof value === "bigint") return Number(value);
  if (typeof value === "string" && value in NON_FINITE) return NON_FINITE[value]!;
  throw new Error(`expected a number, got ${show(value)}`);
}

/** A V2 JSON `data` list (flat or nested) as `TensorValues`; throws on an element the datatype cannot hold. */
export function valuesFromJson(datatype: V2Datatype, data: readonly unknown[]): TensorValues {
  const flat = data.flat(32);
  switch (datatype) {
    case "BYTES":
      return flat.map((value) => {
        if (typeof value !== "string") throw new Error(`expected a string, got ${show(value)}`);
        return utf8.encode(value);
      });
    case "BOOL":
      return Uint8Array.from(flat, (value) => {
        if (typeof value !== "boolean") throw new Error(`expected a boolean, got ${show(value)}`);
        return value ? 1 : 0;
      });
    case "INT64":
    case "UINT64": {
      const fits = datatype === "INT64" ? BigInt.asIntN : BigInt.asUintN;
      const exact = flat.map((value) => {
        const integer =
          typeof value === "bigint" || (typeof value === "number" && Number.isSafeInteger(value))
            ? BigInt(value)
            : undefined;
        if (integer === undefined || fits(64, integer) !== integer)
          throw new Error(`expected an exact ${datatype} integer, got ${String(value)}`);
        return integer;
      });
      return datatype === "INT64" ? BigInt64Array.from(exact) : BigUint64Array.from(exact);
    }
    case "FP16": {
      const view = new DataView(new ArrayBuffer(2));
      return Uint16Array.from(flat, (value) => {
        setFloat16(view, 0, jsonNumber(value), true);
        return view.getUint16(0, true);
      });
    }
    case "FP32":
      return Float32Array.from(flat, jsonNumber);
    case "FP64":
      return Float64Array.from(flat, jsonNumber);
    default: {
      const array = new ARRAY_TYPE[datatype](flat.length) as Int32Array;
      for (const [i, value] of flat.entries()) {
        if (typeof value !== "number" || !Number.isInteger(value))
          throw new Error(`expected an integer, got ${show(value)}`);
        array[i] = value;
      }
      return array;
    }
  }
}

/** The JSON header and raw data of `request`: binary inputs carry `binary_data_size` and no `data`. */
export function encodeBinaryRequest(request: ClientRequest): EncodedRequest {
  const chunks: Buffer[] = [];
  const inputs = request.inputs.map((input) => {
    const tensor = { name: input.name, datatype: input.datatype, shape: [...input.shape] };
    if (!input.binary) return { ...tensor, data: jsonData(input.datatype, input.data) };
    const bytes = tensorBytes(input.datatype, input.data);
    chunks.push(bytes);
    return { ...tensor, parameters: { binary_data_size: bytes.length } };
  });
  // JSON.stringify writes jsonData's JSON.rawJSON values (INT64 digits, -0) as they are.
  const header = Buffer.from(
    JSON.stringify({
      ...(request.id === undefined ? {} : { id: request.id }),
      ...(request.parameters === undefined ? {} : { parameters: request.parameters }),
      inputs,
      ...(request.outputs === undefined ? {} : { outputs: request.outputs }),
    }),
    "utf8",
  );
  return { body: Buffer.concat([header, ...chunks]), headerLength: header.length };
}

/** `request` as a plain JSON body; every input must be a JSON one. */
export function encodeJsonRequest(request: ClientRequest): string {
  const binary = request.inputs.find((input) => input.binary);
  if (binary !== undefined) throw new Error(`input '${binary.name}' is binary; a JSON body carries none`);
  return encodeBinaryRequest(request).body.toString("utf8");
}

/** Any JSON header and trailing bytes, for requests the encoder would never make. */
export function rawBinaryBody(header: unknown, ...data: readonly Uint8Array[]): EncodedRequest {
  const json = Buffer.from(JSON.stringify(header), "utf8");
  return { body: Buffer.concat([json, ...data]), headerLength: json.length };
}

const parametersSchema = z.record(z.string(), z.unknown());

const responseHeaderSchema = z.object({
  model_name: z.string(),
  model_version: z.string().optional(),
  id: z.string().optional(),
  parameters: parametersSchema.optional(),
  outputs: z.array(
    z.object({
      name: z.string(),
      datatype: z.enum(V2_DATATYPES as [V2Datatype, ...V2Datatype[]]),
      shape: z.array(z.number().int().nonnegative()),
      parameters: parametersSchema.optional(),
      data: z.array(z.unknown()).optional(),
    }),
  ),
});

/**
 * An infer response: its first `headerLength` bytes are the JSON header (the whole body when undefined),
 * and each output with `parameters.binary_data_size` takes that many of the bytes after it, in order.
 * Throws unless every byte is accounted for and every output's element count matches its shape.
 */
export function decodeBinaryResponse(body: Buffer, headerLength: number | undefined): DecodedResponse {
  const length = headerLength ?? body.length;
  if (!Number.isSafeInteger(length) || length < 0 || length > body.length)
    throw new Error(`a header of ${headerLength} bytes does not fit a body of ${body.length}`);
  const header = responseHeaderSchema.parse(parseExactJson(body.toString("utf8", 0, length)));
  let offset = length;
  const outputs = header.outputs.map((output): DecodedOutput => {
    const size = output.parameters?.binary_data_size;
    let values: TensorValues;
    let bytes: Buffer | undefined;
    if (size === undefined) {
      if (output.data === undefined)
        throw new Error(`output '${output.name}' has neither data nor binary data`);
      values = valuesFromJson(output.datatype, output.data);
    } else {
      if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0)
        throw new Error(`output '${output.name}' has binary_data_size ${JSON.stringify(size)}`);
      if (offset + size > body.length)
        throw new Error(`output '${output.name}' needs ${size} bytes; ${body.length - offset} are left`);
      bytes = body.subarray(offset, offset + size);
      offset += size;
      values = valuesFromBytes(output.datatype, bytes);
    }
    if (values.length !== elementCount(output.shape))
      throw new Error(`output '${output.name}' has ${values.length} elements for shape [${output.shape}]`);
    return {
      name: output.name,
      datatype: output.datatype,
      shape: output.shape,
      parameters: output.parameters,
      hadJsonData: output.data !== undefined,
      bytes,
      values,
    };
  });
  if (offset !== body.length)
    throw new Error(`${body.length - offset} bytes follow the last binary output's data`);
  return { model_name: header.model_name, model_version: header.model_version, id: header.id, outputs };
}

/**
 * Each element whose bits differ, as `[index]: got <bits>, expected <bits>` (fixed-size elements as
 * big-endian hex, `0x8000` for FP16 -0; BYTES as JSON strings); empty when all agree.
 */
export function elementDifferences(
  datatype: V2Datatype,
  actual: TensorValues,
  expected: TensorValues,
): string[] {
  const size = elementSize(datatype);
  const elementsOf = (values: TensorValues): string[] => {
    const bytes = tensorBytes(datatype, values);
    if (size === undefined)
      return (valuesFromBytes("BYTES", bytes) as Uint8Array[]).map((element) =>
        JSON.stringify(Buffer.from(element).toString("utf8")),
      );
    return Array.from(
      { length: bytes.length / size },
      (_, i) =>
        `0x${Buffer.from(bytes.subarray(i * size, (i + 1) * size))
          .reverse()
          .toString("hex")}`,
    );
  };
  const got = elementsOf(actual);
  const want = elementsOf(expected);
  const differences: string[] = [];
  for (let i = 0; i < Math.max(got.length, want.length); i++) {
    if (got[i] !== want[i])
      differences.push(`[${i}]: got ${got[i] ?? "nothing"}, expected ${want[i] ?? "nothing"}`);
  }
  return differences;
}
