/**
 * The V2 binary tensor data extension through the local stack, on both backends: requests and responses
 * are made and read by test/support/binary-v2.ts, a client written from the spec alone.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ModelVersion } from "#core/model.ts";
import type { LocalStack } from "../../local/stack.ts";
import { ElemType, encodeModel } from "../../models/onnx-builder.ts";
import { buildDatatypeZooModel, V2_DATATYPES, type V2Datatype } from "../../models/zoo.ts";
import {
  type ClientRequest,
  type ClientTensor,
  type DecodedResponse,
  decodeBinaryResponse,
  type EncodedRequest,
  elementDifferences,
  encodeBinaryRequest,
  encodeJsonRequest,
  jsonData,
  rawBinaryBody,
  type TensorValues,
  tensorBytes,
} from "../support/binary-v2.ts";
import { startTestStack, stopTestStack, TEST_API_KEY } from "../support/local-stack.ts";
import { expectSameTensor, runDirectly } from "../support/onnxruntime-reference.ts";

const REQUEST_TIMEOUT_MS = 30_000;
const IMAGE_TIMEOUT_MS = 90_000;
const PUBLISH_TIMEOUT_MS = 180_000;

/** Every zoo input takes [batch, n]; the symbolic dims must agree across inputs, so all share one shape. */
const SHAPE = [2, 5] as const;
const IMAGE_SHAPE = [1, 3, 224, 224] as const;
const IMAGE_ELEMENTS = 3 * 224 * 224;

const f32Bits = (...bits: number[]) => new Float32Array(Uint32Array.from(bits).buffer);
const f64Bits = (...bits: bigint[]) => new Float64Array(BigUint64Array.from(bits).buffer);

/** Ten elements of each datatype at its edges: ranges' ends, 2^53 + 1, -0, subnormals, non-finite values. */
const SAMPLES: Readonly<Record<V2Datatype, TensorValues>> = {
  BOOL: Uint8Array.of(1, 0, 0, 1, 1, 0, 1, 0, 0, 1),
  UINT8: Uint8Array.of(0, 1, 2, 127, 128, 129, 200, 253, 254, 255),
  UINT16: Uint16Array.of(0, 1, 255, 256, 0x7fff, 0x8000, 0x8001, 40_000, 0xfffe, 0xffff),
  UINT32: Uint32Array.of(0, 1, 0xff, 0x100, 0x7fffffff, 0x80000000, 0x80000001, 3e9, 0xfffffffe, 0xffffffff),
  UINT64: BigUint64Array.of(
    0n,
    1n,
    2n ** 32n,
    2n ** 53n - 1n,
    2n ** 53n,
    2n ** 53n + 1n,
    2n ** 63n - 1n,
    2n ** 63n,
    2n ** 64n - 2n,
    2n ** 64n - 1n,
  ),
  INT8: Int8Array.of(-128, -127, -2, -1, 0, 1, 2, 100, 126, 127),
  INT16: Int16Array.of(-32768, -32767, -256, -1, 0, 1, 255, 256, 32766, 32767),
  INT32: Int32Array.of(-2147483648, -2147483647, -65536, -1, 0, 1, 65536, 123456789, 2147483646, 2147483647),
  INT64: BigInt64Array.of(
    -(2n ** 63n),
    -(2n ** 63n) + 1n,
    -(2n ** 53n) - 1n,
    -(2n ** 53n),
    -1n,
    0n,
    1n,
    2n ** 53n + 1n,
    2n ** 63n - 2n,
    2n ** 63n - 1n,
  ),
  // 0, -0, smallest and largest subnormal, smallest normal, ±65504, ±infinity, NaN.
  FP16: Uint16Array.of(0x0000, 0x8000, 0x0001, 0x03ff, 0x0400, 0x7bff, 0xfbff, 0x7c00, 0xfc00, 0x7e00),
  // 0, -0, smallest and largest subnormal, 0.1, ±largest finite, ±infinity, NaN.
  FP32: f32Bits(
    0x00000000,
    0x80000000,
    0x00000001,
    0x007fffff,
    0x3dcccccd,
    0x7f7fffff,
    0xff7fffff,
    0x7f800000,
    0xff800000,
    0x7fc00000,
  ),
  FP64: Float64Array.of(
    0,
    -0,
    5e-324,
    2.225073858507201e-308,
    0.1,
    Number.MAX_VALUE,
    -Number.MAX_VALUE,
    Number.POSITIVE_INFINITY,
    Number.NEGATIVE_INFINITY,
    Number.NaN,
  ),
  // Empty, non-ASCII (2-, 3- and 4-byte UTF-8, a combining mark), JSON escapes, and a length past 255.
  BYTES: [
    "héllo",
    "",
    "日本語",
    "🚀 rocket",
    "x".repeat(300),
    'tab\tquote"backslash\\',
    "ascii",
    "Ωmega",
    "ß",
    "e\u0301",
  ],
};

/** Quiet NaNs with payloads and signs: JSON cannot carry them, raw bits must. */
const NAN_PAYLOADS: Readonly<Partial<Record<V2Datatype, TensorValues>>> = {
  FP16: Uint16Array.of(0x7e01, 0xfe00, 0x7fff, 0xffff, 0x7e00, 0x3c00, 0xbc00, 0x0000, 0x8000, 0x7d55),
  FP32: f32Bits(
    0x7fc00001,
    0xffc00000,
    0x7fffffff,
    0xffffffff,
    0x7fc00000,
    0x3f800000,
    0xbf800000,
    0x7fd55555,
    0xffeaaaaa,
    0x7fc0ffff,
  ),
  FP64: f64Bits(
    0x7ff8000000000001n,
    0xfff8000000000000n,
    0x7fffffffffffffffn,
    0xffffffffffffffffn,
    0x7ff8000000000000n,
    0x3ff0000000000000n,
    0xbff0000000000000n,
    0x7ff8555555555555n,
    0xfffaaaaaaaaaaaaan,
    0x7ff800000000ffffn,
  ),
};

const inputName = (datatype: V2Datatype) => `in_${datatype.toLowerCase()}`;
const outputName = (datatype: V2Datatype) => `out_${datatype.toLowerCase()}`;

function zooInput(
  datatype: V2Datatype,
  binary: boolean,
  samples: Readonly<Partial<Record<V2Datatype, TensorValues>>> = SAMPLES,
): ClientTensor {
  return {
    name: inputName(datatype),
    datatype,
    shape: SHAPE,
    data: samples[datatype] ?? SAMPLES[datatype],
    binary,
  };
}

/** All thirteen zoo inputs, which the model needs every one of, each binary or JSON as `binary` says. */
function zooInputs(binary: (datatype: V2Datatype) => boolean, order = V2_DATATYPES): ClientTensor[] {
  return order.map((datatype) => zooInput(datatype, binary(datatype)));
}

/** The JSON form of a zoo input, for headers built by hand. */
function jsonInput(datatype: V2Datatype): Record<string, unknown> {
  return { name: inputName(datatype), datatype, shape: SHAPE, data: jsonData(datatype, SAMPLES[datatype]) };
}

/** A zoo request header whose input `name` is replaced by `input`; the others go as JSON. */
function headerWith(name: string, input: Record<string, unknown>): { inputs: Record<string, unknown>[] } {
  return {
    inputs: V2_DATATYPES.map((datatype) =>
      inputName(datatype) === name ? { name, ...input } : jsonInput(datatype),
    ),
  };
}

/** `image` FP32 [batch, 3, 224, 224] -> its per-channel mean and the image less that mean. */
function buildImageModel(): Uint8Array {
  return encodeModel({
    graphName: "image_stats",
    inputs: [{ name: "image", elemType: ElemType.FLOAT, dims: ["batch", 3, 224, 224] }],
    outputs: [
      { name: "channel_mean", elemType: ElemType.FLOAT, dims: ["batch", 3, 1, 1] },
      { name: "centered", elemType: ElemType.FLOAT, dims: ["batch", 3, 224, 224] },
    ],
    nodes: [
      {
        opType: "ReduceMean",
        inputs: ["image"],
        outputs: ["channel_mean"],
        attributes: { axes: { ints: [2, 3] }, keepdims: { int: 1 } },
      },
      { opType: "Sub", inputs: ["image", "channel_mean"], outputs: ["centered"] },
    ],
  });
}

function images(batch: number): Float32Array {
  return Float32Array.from({ length: batch * IMAGE_ELEMENTS }, (_, i) => Math.sin(i * 0.37) * 2 + 0.25);
}

interface Answer {
  readonly status: number;
  readonly contentType: string | null;
  readonly headerLength: string | null;
  readonly backend: string | null;
  readonly body: Buffer;
}

let stack: LocalStack | undefined;
let dataDir: string | undefined;

function url(path: string): string {
  if (stack === undefined) throw new Error("the local stack did not start");
  return `${stack.url}${path}`;
}

async function answerOf(response: Response): Promise<Answer> {
  return {
    status: response.status,
    contentType: response.headers.get("content-type"),
    headerLength: response.headers.get("inference-header-content-length"),
    backend: response.headers.get("x-maas-backend"),
    body: Buffer.from(await response.arrayBuffer()),
  };
}

/** A binary request, with `Inference-Header-Content-Length` as given (the header's true length by default). */
async function postBinary(
  model: string,
  encoded: EncodedRequest,
  headerLength = String(encoded.headerLength),
): Promise<Answer> {
  const response = await fetch(url(`/v2/models/${model}/infer`), {
    method: "POST",
    headers: {
      "x-api-key": TEST_API_KEY,
      "content-type": "application/octet-stream",
      "inference-header-content-length": headerLength,
    },
    body: encoded.body,
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  return answerOf(response);
}

async function postJson(model: string, body: string): Promise<Answer> {
  const response = await fetch(url(`/v2/models/${model}/infer`), {
    method: "POST",
    headers: { "x-api-key": TEST_API_KEY, "content-type": "application/json" },
    body,
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  return answerOf(response);
}

const inferBinary = (model: string, request: ClientRequest) =>
  postBinary(model, encodeBinaryRequest(request));
const inferJson = (model: string, request: ClientRequest) => postJson(model, encodeJsonRequest(request));

/** The decoded body of a 200, binary when the response says so. */
function decoded(answer: Answer): DecodedResponse {
  expect(answer.status, answer.body.toString("utf8", 0, 2_000)).toBe(200);
  const headerLength = answer.headerLength === null ? undefined : Number(answer.headerLength);
  return decodeBinaryResponse(answer.body, headerLength);
}

function expectBinaryResponse(answer: Answer): void {
  expect(answer.contentType).toMatch(/^application\/octet-stream\b/);
  expect(answer.headerLength).toMatch(/^\d+$/);
}

function expectJsonResponse(answer: Answer): void {
  expect(answer.contentType).toMatch(/^application\/json\b/);
  expect(answer.headerLength).toBeNull();
}

function outputOf(response: DecodedResponse, name: string) {
  const output = response.outputs.find((candidate) => candidate.name === name);
  if (output === undefined)
    throw new Error(`no output '${name}' in [${response.outputs.map((o) => o.name)}]`);
  return output;
}

/** Asserts `name` came back as binary data: exactly the bytes of `expected`, element for element. */
function expectBinaryOutput(
  response: DecodedResponse,
  name: string,
  datatype: V2Datatype,
  expected: TensorValues,
): void {
  const output = outputOf(response, name);
  const bytes = tensorBytes(datatype, expected);
  expect(output.hadJsonData, `output '${name}' has data in the header`).toBe(false);
  expect(output.parameters?.binary_data_size).toBe(bytes.length);
  expect(elementDifferences(datatype, output.values, expected), `output '${name}'`).toEqual([]);
  expect(output.bytes).toEqual(bytes);
}

/** Asserts `name` came back as a JSON data list whose elements have exactly `expected`'s bits. */
function expectJsonOutput(
  response: DecodedResponse,
  name: string,
  datatype: V2Datatype,
  expected: TensorValues,
): void {
  const output = outputOf(response, name);
  expect(output.hadJsonData, `output '${name}' has data in the header`).toBe(true);
  expect(output.parameters?.binary_data_size).toBeUndefined();
  expect(elementDifferences(datatype, output.values, expected), `output '${name}'`).toEqual([]);
}

/** An error answer: the status, a JSON `{"error"}` body, and the message. */
function errorMessage(answer: Answer, status: number): string {
  const text = answer.body.toString("utf8");
  expect(answer.status, text).toBe(status);
  expect(answer.contentType).toMatch(/^application\/json\b/);
  const body: unknown = JSON.parse(text);
  expect(body).toEqual({ error: expect.any(String) });
  return (body as { error: string }).error;
}

const BACKENDS = [
  { backend: "lambda", zoo: "zoo-lambda", image: "image-lambda", manifest: undefined },
  { backend: "sagemaker", zoo: "zoo-sagemaker", image: "image-sagemaker", manifest: { target: "sagemaker" } },
] as const;

beforeAll(async () => {
  ({ stack, dataDir } = await startTestStack("binary-tensors", { demo: false }));
  const live = stack;
  const zoo = buildDatatypeZooModel();
  const image = buildImageModel();
  const published = await Promise.all(
    BACKENDS.flatMap(({ zoo: zooName, image: imageName, manifest }) => {
      const options = manifest === undefined ? {} : { manifest };
      return [live.publish(zooName, 1, zoo, options), live.publish(imageName, 1, image, options)];
    }),
  );
  for (const record of published as ModelVersion[]) {
    expect(["ready", "optimizing"], `${record.name} is ${record.status}`).toContain(record.status);
  }
}, PUBLISH_TIMEOUT_MS);

afterAll(() => stopTestStack(stack, dataDir));

describe("server metadata", () => {
  it("lists binary_tensor_data among the extensions", { timeout: REQUEST_TIMEOUT_MS }, async () => {
    const response = await fetch(url("/v2"), {
      headers: { "x-api-key": TEST_API_KEY },
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });

    expect(response.status).toBe(200);
    expect(((await response.json()) as { extensions?: unknown }).extensions).toContain("binary_tensor_data");
  });
});

describe.each(BACKENDS)("binary tensor data on the $backend backend", ({ backend, zoo, image }) => {
  describe("every datatype", () => {
    it.each(V2_DATATYPES)(
      "returns %s as binary data byte for byte as sent, from a binary request and from a JSON one",
      { timeout: REQUEST_TIMEOUT_MS },
      async (datatype) => {
        const outputs = [{ name: outputName(datatype), parameters: { binary_data: true } }];

        const fromBinary = await inferBinary(zoo, { inputs: zooInputs(() => true), outputs });
        const fromJson = await inferJson(zoo, { inputs: zooInputs(() => false), outputs });

        for (const answer of [fromBinary, fromJson]) {
          const response = decoded(answer);
          expectBinaryResponse(answer);
          expect(answer.backend).toBe(backend);
          expect(response.outputs.map(({ name, datatype, shape }) => ({ name, datatype, shape }))).toEqual([
            { name: outputName(datatype), datatype, shape: [...SHAPE] },
          ]);
          expectBinaryOutput(response, outputName(datatype), datatype, SAMPLES[datatype]);
        }
        expect(fromBinary.body).toEqual(fromJson.body);
      },
    );

    it.each(V2_DATATYPES)(
      "returns %s as JSON with the values sent, the same text from a binary request as from a JSON one",
      { timeout: REQUEST_TIMEOUT_MS },
      async (datatype) => {
        const outputs = [{ name: outputName(datatype) }];

        const fromBinary = await inferBinary(zoo, { inputs: zooInputs(() => true), outputs });
        const fromJson = await inferJson(zoo, { inputs: zooInputs(() => false), outputs });

        for (const answer of [fromBinary, fromJson]) {
          const response = decoded(answer);
          expectJsonResponse(answer);
          expect(answer.backend).toBe(backend);
          expectJsonOutput(response, outputName(datatype), datatype, SAMPLES[datatype]);
        }
        expect(fromBinary.body.toString("utf8")).toBe(fromJson.body.toString("utf8"));
      },
    );

    it("returns NaN payloads and signs of FP16, FP32 and FP64 bit for bit from binary inputs to binary outputs", {
      timeout: REQUEST_TIMEOUT_MS,
    }, async () => {
      const floats = ["FP16", "FP32", "FP64"] as const;
      const inputs = V2_DATATYPES.map((datatype) => zooInput(datatype, true, NAN_PAYLOADS));

      const response = decoded(
        await inferBinary(zoo, {
          inputs,
          outputs: floats.map((datatype) => ({
            name: outputName(datatype),
            parameters: { binary_data: true },
          })),
        }),
      );

      for (const datatype of floats) {
        expectBinaryOutput(response, outputName(datatype), datatype, NAN_PAYLOADS[datatype]!);
      }
    });
  });

  describe("JSON and binary inputs in one request", () => {
    it("reads each binary input's bytes in turn with JSON inputs between them", {
      timeout: REQUEST_TIMEOUT_MS,
    }, async () => {
      const inputs = zooInputs((datatype) => V2_DATATYPES.indexOf(datatype) % 2 === 0);

      const answer = await inferBinary(zoo, { inputs, parameters: { binary_data_output: true } });

      const response = decoded(answer);
      expectBinaryResponse(answer);
      expect(response.outputs.map((output) => output.name).sort()).toEqual(
        V2_DATATYPES.map(outputName).sort(),
      );
      for (const datatype of V2_DATATYPES) {
        expectBinaryOutput(response, outputName(datatype), datatype, SAMPLES[datatype]);
      }
    });

    it("reads binary inputs' bytes in the request's input order, not the model's", {
      timeout: REQUEST_TIMEOUT_MS,
    }, async () => {
      const inputs = zooInputs(() => true, [...V2_DATATYPES].reverse());

      const response = decoded(await inferBinary(zoo, { inputs, parameters: { binary_data_output: true } }));

      for (const datatype of V2_DATATYPES) {
        expectBinaryOutput(response, outputName(datatype), datatype, SAMPLES[datatype]);
      }
    });
  });

  describe("choosing binary outputs", () => {
    it("keeps an output with binary_data: false as JSON when the request asks binary_data_output: true", {
      timeout: REQUEST_TIMEOUT_MS,
    }, async () => {
      const answer = await inferBinary(zoo, {
        inputs: zooInputs(() => true),
        parameters: { binary_data_output: true },
        outputs: [{ name: "out_int32", parameters: { binary_data: false } }, { name: "out_uint64" }],
      });

      const response = decoded(answer);
      expectBinaryResponse(answer);
      expectJsonOutput(response, "out_int32", "INT32", SAMPLES.INT32);
      expectBinaryOutput(response, "out_uint64", "UINT64", SAMPLES.UINT64);
    });

    it("sends an output with binary_data: true as binary when the request asks binary_data_output: false", {
      timeout: REQUEST_TIMEOUT_MS,
    }, async () => {
      const answer = await inferJson(zoo, {
        inputs: zooInputs(() => false),
        parameters: { binary_data_output: false },
        outputs: [{ name: "out_int32", parameters: { binary_data: true } }, { name: "out_uint64" }],
      });

      const response = decoded(answer);
      expectBinaryResponse(answer);
      expectBinaryOutput(response, "out_int32", "INT32", SAMPLES.INT32);
      expectJsonOutput(response, "out_uint64", "UINT64", SAMPLES.UINT64);
    });

    it("answers plain JSON without Inference-Header-Content-Length when every output opts out of binary_data_output", {
      timeout: REQUEST_TIMEOUT_MS,
    }, async () => {
      const answer = await inferBinary(zoo, {
        inputs: zooInputs(() => true),
        parameters: { binary_data_output: true },
        outputs: [
          { name: "out_int32", parameters: { binary_data: false } },
          { name: "out_uint64", parameters: { binary_data: false } },
        ],
      });

      const response = decoded(answer);
      expectJsonResponse(answer);
      expectJsonOutput(response, "out_int32", "INT32", SAMPLES.INT32);
      expectJsonOutput(response, "out_uint64", "UINT64", SAMPLES.UINT64);
    });
  });

  describe("malformed binary requests", () => {
    const int32 = tensorBytes("INT32", SAMPLES.INT32);
    const int32Input = (size: number) => ({
      datatype: "INT32",
      shape: [...SHAPE],
      parameters: { binary_data_size: size },
    });

    it("refuses a binary_data_size that is not the shape's element count times 4 bytes for INT32", {
      timeout: REQUEST_TIMEOUT_MS,
    }, async () => {
      const body = rawBinaryBody(headerWith("in_int32", int32Input(36)), int32.subarray(0, 36));

      const message = errorMessage(await postBinary(zoo, body), 400);

      expect(message).toMatch(/in_int32/);
    });

    it("refuses binary_data_sizes that add up to more than the bytes after the header", {
      timeout: REQUEST_TIMEOUT_MS,
    }, async () => {
      const body = rawBinaryBody(headerWith("in_int32", int32Input(40)), int32.subarray(0, 36));

      const message = errorMessage(await postBinary(zoo, body), 400);

      expect(message).toMatch(/in_int32|\b(36|40)\b/);
    });

    it("refuses bytes left over after the last binary input", { timeout: REQUEST_TIMEOUT_MS }, async () => {
      const body = rawBinaryBody(headerWith("in_int32", int32Input(40)), int32, Buffer.alloc(4));

      const message = errorMessage(await postBinary(zoo, body), 400);

      expect(message).toMatch(/\b(4|40|44)\b/);
    });

    it("refuses an Inference-Header-Content-Length larger than the body", {
      timeout: REQUEST_TIMEOUT_MS,
    }, async () => {
      const body = rawBinaryBody(headerWith("in_int32", int32Input(40)), int32);

      const message = errorMessage(await postBinary(zoo, body, String(body.body.length + 10)), 400);

      expect(message).toMatch(/inference-header-content-length|header/i);
    });

    it.each(["twelve", "-5", "12abc"])(
      "refuses an Inference-Header-Content-Length of %j",
      { timeout: REQUEST_TIMEOUT_MS },
      async (value) => {
        const body = rawBinaryBody(headerWith("in_int32", int32Input(40)), int32);

        const message = errorMessage(await postBinary(zoo, body, value), 400);

        expect(message).toMatch(/inference-header-content-length|header/i);
      },
    );

    it("refuses an input that has both data and binary_data_size", {
      timeout: REQUEST_TIMEOUT_MS,
    }, async () => {
      const header = headerWith("in_int32", { ...int32Input(40), data: jsonData("INT32", SAMPLES.INT32) });

      const message = errorMessage(await postBinary(zoo, rawBinaryBody(header, int32)), 400);

      expect(message).toMatch(/in_int32/);
    });

    it("refuses a BYTES element whose length runs past its input's binary data", {
      timeout: REQUEST_TIMEOUT_MS,
    }, async () => {
      const data = Buffer.concat([Buffer.from([100, 0, 0, 0]), Buffer.from("abc")]);
      const header = headerWith("in_bytes", {
        datatype: "BYTES",
        shape: [...SHAPE],
        parameters: { binary_data_size: data.length },
      });

      const message = errorMessage(await postBinary(zoo, rawBinaryBody(header, data)), 400);

      expect(message).toMatch(/in_bytes/);
    });

    it("refuses BYTES binary data with fewer elements than the shape holds", {
      timeout: REQUEST_TIMEOUT_MS,
    }, async () => {
      const data = tensorBytes("BYTES", (SAMPLES.BYTES as string[]).slice(0, 9));
      const header = headerWith("in_bytes", {
        datatype: "BYTES",
        shape: [...SHAPE],
        parameters: { binary_data_size: data.length },
      });

      const message = errorMessage(await postBinary(zoo, rawBinaryBody(header, data)), 400);

      expect(message).toMatch(/in_bytes/);
    });
  });

  describe("images", () => {
    it("answers a 1x3x224x224 FP32 image sent binary with onnxruntime's outputs", {
      timeout: IMAGE_TIMEOUT_MS,
    }, async () => {
      const pixels = images(1);
      const expected = await runDirectly(buildImageModel(), [
        { name: "image", datatype: "FP32", shape: IMAGE_SHAPE, data: Array.from(pixels) },
      ]);

      const answer = await inferBinary(image, {
        inputs: [{ name: "image", datatype: "FP32", shape: IMAGE_SHAPE, data: pixels, binary: true }],
        parameters: { binary_data_output: true },
      });

      const response = decoded(answer);
      expectBinaryResponse(answer);
      expect(answer.backend).toBe(backend);
      for (const reference of expected) {
        const output = outputOf(response, reference.name);
        expect(output.bytes, `output '${reference.name}' came as binary data`).toBeDefined();
        expectSameTensor({ ...output, data: Array.from(output.values as Float32Array) }, reference);
      }
    });

    it("serves a binary body of six images (3.6 MB, 4.8 MB as base64) within Lambda's 6 MiB event", {
      timeout: IMAGE_TIMEOUT_MS,
    }, async () => {
      const answer = await inferBinary(image, {
        inputs: [{ name: "image", datatype: "FP32", shape: [6, 3, 224, 224], data: images(6), binary: true }],
        outputs: [{ name: "channel_mean", parameters: { binary_data: true } }],
      });

      const response = decoded(answer);
      expect(outputOf(response, "channel_mean").shape).toEqual([6, 3, 1, 1]);
    });

    it("refuses with 413, naming the 6 MB limit and asynchronous inference, a binary body whose base64 event passes it", {
      timeout: IMAGE_TIMEOUT_MS,
    }, async () => {
      // Nine images are 5.4 MB: under 6 MiB as bytes, about 7.2 MB as the base64 in the Lambda event.
      const encoded = encodeBinaryRequest({
        inputs: [{ name: "image", datatype: "FP32", shape: [9, 3, 224, 224], data: images(9), binary: true }],
      });

      const answer = await postBinary(image, encoded);

      const text = answer.body.toString("utf8");
      expect(answer.status, text).toBe(413);
      const body: unknown = JSON.parse(text);
      const message =
        (body as { message?: unknown; error?: unknown }).message ?? (body as { error?: unknown }).error;
      expect(message).toEqual(expect.any(String));
      expect(message).toMatch(/\b6 ?Mi?B\b|6291456/);
      expect(message).toMatch(/async/i);
    });
  });
});
