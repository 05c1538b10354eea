import { InvalidRequestError, ResponseTooLargeError } from "#core/errors.ts";
import { elementCount, formatShape } from "#core/tensor/shape.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import { parseInferRequestBody, parseTensorDocument, validateInferRequest } from "./parse.ts";
import {
  datatypeOfOrtType,
  inferResponseJson,
  isV2Datatype,
  outputJson,
  responseHead,
  type TensorResponse,
  typedArrayOf,
  utf8Text,
} from "./tensor-codec.ts";
import type { InferRequest, RequestInput } from "./wire.ts";

/**
 * The Open Inference Protocol's binary tensor data extension, as Triton (docs/protocol/
 * extension_binary_data.md) and KServe define it: a body is a JSON header of `Inference-Header-Content-Length`
 * bytes followed by raw tensor data, little-endian and row-major, in the order of the tensors that carry
 * `parameters.binary_data_size`; a BYTES element is a 4-byte little-endian length and its bytes.
 * Typed arrays here use the platform's byte order, which is little-endian on every Lambda and SageMaker CPU.
 */

/** What `GET /v2` lists once the extension is served. */
export const BINARY_DATA_EXTENSION = "binary_tensor_data";
/** The request and response header that gives the JSON header's length in bytes. */
export const HEADER_LENGTH_HEADER = "inference-header-content-length";
/** A response with binary outputs: what Triton sends. */
export const BINARY_CONTENT_TYPE = "application/octet-stream";
/**
 * SageMaker passes no custom header to a container: the JSON header's length travels in the content
 * type, as SageMaker's Triton containers take it (`...;json-header-size=N`).
 */
export const SAGEMAKER_BINARY_CONTENT_TYPE = "application/vnd.sagemaker-triton.binary+json";

/** An infer body: JSON text, or bytes that start with a JSON header of `headerLength` bytes. */
export type InferBody = string | BinaryBody;

export interface BinaryBody {
  readonly bytes: Uint8Array;
  readonly headerLength: number;
}

/** `Inference-Header-Content-Length`, checked against the body it describes. */
export function parseHeaderLength(value: string, bodyBytes: number): number {
  const length = /^\s*\d{1,15}\s*$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(length))
    throw new InvalidRequestError(
      `Inference-Header-Content-Length must be the JSON header's length in bytes, got '${value.slice(0, 32)}'`,
    );
  if (length > bodyBytes)
    throw new InvalidRequestError(
      `Inference-Header-Content-Length is ${length} but the body has only ${bodyBytes} bytes`,
    );
  return length;
}

/** The JSON header length a SageMaker-style content type carries (`...;json-header-size=N`), if any. */
export function headerLengthFromContentType(contentType: string | undefined): string | undefined {
  return /;\s*json-header-size=([^;\s]*)/i.exec(contentType ?? "")?.[1];
}

/** Parses an infer body; inputs sent as binary data come back with their data decoded (typed arrays, strings). */
export function parseInferBody(body: InferBody): InferRequest {
  if (typeof body === "string") return withoutBinaryInputs(parseInferRequestBody(body));
  const { bytes, headerLength } = body;
  if (headerLength === 0) throw new InvalidRequestError("the JSON header of the request is empty");
  const header = Buffer.from(bytes.buffer, bytes.byteOffset, headerLength).toString("utf8");
  const request = parseTensorDocument(header, validateInferRequest, (document) => document.inputs);
  return { ...request, inputs: readBinaryTensors(request.inputs, bytes.subarray(headerLength), "input") };
}

/** A request without the extension's header cannot carry binary data: say so rather than "no data". */
function withoutBinaryInputs(request: InferRequest): InferRequest {
  const binary = request.inputs.find((input) => input.parameters?.binary_data_size !== undefined);
  if (binary !== undefined)
    throw new InvalidRequestError(
      `input '${binary.name}' has parameters.binary_data_size, but the request has no Inference-Header-Content-Length header`,
    );
  return request;
}

/** A V2 tensor as a request's inputs and a response's outputs carry it. */
type WireTensor = Pick<RequestInput, "name" | "shape" | "datatype" | "parameters" | "data">;

/**
 * Takes the bytes of each tensor with `binary_data_size`, in order, from `tail` and decodes them into
 * `data`: every byte must belong to one tensor. `kind` names them in errors (`input`, `output`).
 */
export function readBinaryTensors<T extends WireTensor>(
  tensors: readonly T[],
  tail: Uint8Array,
  kind: string,
): T[] {
  let offset = 0;
  const read = tensors.map((input) => {
    const size = binaryDataSize(input);
    if (size === undefined) return input;
    if (input.data !== undefined)
      throw new InvalidRequestError(
        `${kind} '${input.name}' has both data and parameters.binary_data_size; send one of them`,
      );
    if (offset + size > tail.length)
      throw new InvalidRequestError(
        `${kind} '${input.name}' has binary_data_size ${size}, but only ${tail.length - offset} bytes of binary data are left after the JSON header`,
      );
    const data = decodeBinaryTensor(input, tail.subarray(offset, offset + size), kind);
    offset += size;
    return { ...input, data };
  });
  if (offset !== tail.length)
    throw new InvalidRequestError(
      `the body has ${tail.length} bytes after the JSON header, but the ${kind}s' binary_data_size add up to ${offset}`,
    );
  return read;
}

function binaryDataSize(tensor: WireTensor): number | undefined {
  const size = tensor.parameters?.binary_data_size;
  if (size === undefined) return undefined;
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0)
    throw new InvalidRequestError(
      `'${tensor.name}': parameters.binary_data_size must be a non-negative integer`,
    );
  return size;
}

function decodeBinaryTensor(
  tensor: WireTensor,
  bytes: Uint8Array,
  kind: string,
): ArrayBufferView | readonly (string | Uint8Array)[] {
  const { datatype, shape } = tensor;
  const name = `${kind} '${tensor.name}'`;
  if (!isV2Datatype(datatype)) throw new InvalidRequestError(`${name}: unsupported datatype ${datatype}`);
  const count = elementCount(shape);
  if (datatype === "BYTES") {
    const elements = decodeBytesElements(name, bytes, count);
    return kind === "input"
      ? elements
      : elements.map((element, index) => utf8Text(element, `${name} element ${index}`));
  }
  const expected = count * typedArrayOf(datatype).BYTES_PER_ELEMENT;
  if (bytes.length !== expected)
    throw new InvalidRequestError(
      `${name}: binary_data_size is ${bytes.length} bytes but ${datatype} of shape ${formatShape(shape)} takes ${expected}`,
    );
  const data = sharedElements(bytes);
  if (datatype === "BOOL") {
    const invalid = data.findIndex((value) => value > 1);
    if (invalid >= 0)
      throw new InvalidRequestError(
        `${name} element ${invalid}: BOOL elements are one byte, 0 or 1, got ${data[invalid]}`,
      );
  }
  return new (typedArrayOf(datatype))(data.buffer as unknown as ArrayBuffer, data.byteOffset, count);
}

/**
 * Where a tensor may start to be read in place: onnxruntime's vector kernels take other paths on less
 * aligned data, and a sum over 25 million floats then came out 1 ulp from the same values copied.
 */
const IN_PLACE_ALIGNMENT = 64;

/**
 * The tensor's bytes in shared memory, which the session's worker thread reads in place (posting 103 MB
 * of plain memory to it cost 640 ms here, shared 12): the body's own bytes when it is shared already and
 * the tensor starts 64-byte aligned (a job's body read from S3, its header padded), a copy otherwise.
 */
function sharedElements(bytes: Uint8Array): Uint8Array {
  if (bytes.buffer instanceof SharedArrayBuffer && bytes.byteOffset % IN_PLACE_ALIGNMENT === 0) return bytes;
  const copy = new Uint8Array(new SharedArrayBuffer(bytes.length));
  copy.set(bytes);
  return copy;
}

/**
 * BYTES elements: a 4-byte little-endian length, then that many bytes. `name`: `input 'x'`. They stay
 * bytes: an image task's input is raw JPEG or PNG; decodeInput reads the others as UTF-8 text.
 */
function decodeBytesElements(name: string, bytes: Uint8Array, count: number): Uint8Array[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const elements: Uint8Array[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    if (offset + 4 > bytes.length)
      throw new InvalidRequestError(
        `${name} element ${elements.length}: its 4-byte length is cut off by the end of the binary data`,
      );
    const length = view.getUint32(offset, true);
    offset += 4;
    if (offset + length > bytes.length)
      throw new InvalidRequestError(
        `${name} element ${elements.length}: its length is ${length} bytes, past the end of the binary data`,
      );
    elements.push(bytes.subarray(offset, offset + length));
    offset += length;
  }
  if (elements.length !== count)
    throw new InvalidRequestError(
      `${name}: binary data holds ${elements.length} BYTES elements but its shape needs ${count}`,
    );
  return elements;
}

/** Which outputs a request asks for as binary data: an output's own `binary_data`, else the request's `binary_data_output`. */
export function binaryOutputsOf(request: InferRequest): (output: string) => boolean {
  const all = flag(request.parameters?.binary_data_output, "parameters.binary_data_output") ?? false;
  const own = new Map<string, boolean>();
  for (const output of request.outputs ?? []) {
    const binary = flag(output.parameters?.binary_data, `output '${output.name}': parameters.binary_data`);
    if (binary !== undefined) own.set(output.name, binary);
  }
  return (output) => own.get(output) ?? all;
}

function flag(value: unknown, what: string): boolean | undefined {
  if (value === undefined || typeof value === "boolean") return value;
  throw new InvalidRequestError(`${what} must be true or false`);
}

/** An infer response as it goes out: JSON text, or a JSON header and binary outputs after it. */
export type EncodedResponse =
  | { readonly json: string }
  | { readonly bytes: Buffer; readonly headerLength: number };

/**
 * Writes a response, with the outputs `binary` picks as binary data. With none picked it is the plain
 * JSON response. The whole body, header and data, must fit `response.maxBytes` (413 otherwise).
 */
export function encodeInferResponse(
  response: TensorResponse,
  binary: (output: string) => boolean,
): EncodedResponse {
  if (!response.outputs.some((output) => binary(output.name))) return { json: inferResponseJson(response) };
  const limit = response.maxBytes ?? Number.POSITIVE_INFINITY;
  const chunks: Uint8Array[] = [];
  let dataBytes = 0;
  const outputs = response.outputs.map((tensor) => {
    // JSON outputs as a JSON response writes them (FP32 in its short form), each refused early when too large.
    if (!binary(tensor.name)) return outputJson(tensor, limit);
    const data = tensorBytes(tensor);
    dataBytes += data.length;
    if (dataBytes > limit)
      throw new ResponseTooLargeError(
        `the outputs' binary data take at least ${dataBytes} bytes; they would`,
        limit,
      );
    chunks.push(data);
    return JSON.stringify({
      name: tensor.name,
      datatype: datatypeOfOrtType(tensor.type),
      shape: tensor.dims,
      parameters: { binary_data_size: data.length },
    });
  });
  const header = Buffer.from(`${responseHead(response)},"outputs":[${outputs.join(",")}]}`);
  const total = header.length + dataBytes;
  if (total > limit) throw new ResponseTooLargeError(`the response is ${total} bytes; it would`, limit);
  return { bytes: Buffer.concat([header, ...chunks], total), headerLength: header.length };
}

/**
 * A request with every input as binary data and every output asked for as binary data: what the
 * SageMaker runner sends the container, with no float ever written as text.
 */
export function encodeBinaryRequest(inputs: readonly NamedTensor[], outputs: readonly string[]): BinaryBody {
  const data = inputs.map(tensorBytes);
  const header = Buffer.from(
    JSON.stringify({
      inputs: inputs.map((tensor, i) => ({
        name: tensor.name,
        shape: tensor.dims,
        datatype: datatypeOfOrtType(tensor.type),
        parameters: { binary_data_size: (data[i] as Uint8Array).length },
      })),
      outputs: outputs.map((name) => ({ name, parameters: { binary_data: true } })),
    }),
  );
  return { bytes: Buffer.concat([header, ...data]), headerLength: header.length };
}

/** A tensor's data as the extension lays it out: the typed array's own bytes, or length-prefixed strings. */
export function tensorBytes(tensor: Pick<NamedTensor, "data" | "type">): Uint8Array {
  const { data } = tensor;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return bytesElements(data as readonly string[]);
}

/** BYTES elements as the extension lays them out: each one's length in 4 little-endian bytes, then its bytes (text as UTF-8). */
export function bytesElements(elements: readonly (string | Uint8Array)[]): Buffer {
  const encoded = elements.map((element) =>
    typeof element === "string" ? Buffer.from(element, "utf8") : element,
  );
  const out = Buffer.allocUnsafe(encoded.reduce((sum, element) => sum + 4 + element.length, 0));
  let offset = 0;
  for (const element of encoded) {
    out.writeUInt32LE(element.length, offset);
    out.set(element, offset + 4);
    offset += 4 + element.length;
  }
  return out;
}
