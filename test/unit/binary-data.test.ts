import { describe, expect, it } from "vitest";
import { InvalidRequestError, ResponseTooLargeError } from "#core/errors.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import {
  type BinaryBody,
  binaryOutputsOf,
  encodeBinaryRequest,
  encodeInferResponse,
  headerLengthFromContentType,
  parseHeaderLength,
  parseInferBody,
  tensorBytes,
} from "#core/v2/binary-data.ts";
import { decodeInput, inferResponseJson, type TensorResponse } from "#core/v2/tensor-codec.ts";
import type { InferRequest } from "#core/v2/wire.ts";
import { thrownBy } from "../support/rejection.ts";

/**
 * A binary body written by hand: the JSON header padded with spaces to `headerLength % 8 === 3`, so no
 * tensor's bytes start aligned for its element type, in a buffer that itself starts one byte in.
 */
function binaryBody(header: unknown, ...data: readonly Uint8Array[]): BinaryBody {
  let json = JSON.stringify(header);
  while (Buffer.byteLength(json) % 8 !== 3) json += " ";
  const body = Buffer.concat([Buffer.from(json), ...data]);
  const backing = new Uint8Array(body.length + 1);
  backing.set(body, 1);
  return { bytes: backing.subarray(1), headerLength: Buffer.byteLength(json) };
}

function float32Bytes(values: readonly number[]): Buffer {
  const out = Buffer.alloc(values.length * 4);
  for (const [i, value] of values.entries()) out.writeFloatLE(value, i * 4);
  return out;
}

function int64Bytes(values: readonly bigint[]): Buffer {
  const out = Buffer.alloc(values.length * 8);
  for (const [i, value] of values.entries()) out.writeBigInt64LE(value, i * 8);
  return out;
}

function uint16Bytes(values: readonly number[]): Buffer {
  const out = Buffer.alloc(values.length * 2);
  for (const [i, value] of values.entries()) out.writeUInt16LE(value, i * 2);
  return out;
}

/** BYTES elements as the extension lays them out: a 4-byte little-endian length, then the bytes. */
function bytesElements(...elements: readonly Uint8Array[]): Buffer {
  return Buffer.concat(
    elements.flatMap((element) => {
      const length = Buffer.alloc(4);
      length.writeUInt32LE(element.length);
      return [length, element];
    }),
  );
}

function binaryInput(name: string, datatype: string, shape: number[], size: number) {
  return { name, datatype, shape, parameters: { binary_data_size: size } };
}

function parseError(body: BinaryBody | string): InvalidRequestError {
  return thrownBy(() => parseInferBody(body), InvalidRequestError);
}

describe("parseHeaderLength", () => {
  it("reads a run of digits, with spaces around it, as the header's length", () => {
    expect(parseHeaderLength("42", 100)).toBe(42);
    expect(parseHeaderLength("  42\t", 100)).toBe(42);
    expect(parseHeaderLength("100", 100)).toBe(100);
    expect(parseHeaderLength("0", 100)).toBe(0);
  });

  it.each(["", " ", "-1", "1e3", "12abc", "0x10", "4.0", "1 2"])(
    "refuses '%s' as a length with a 400",
    (value) => {
      const error = thrownBy(() => parseHeaderLength(value, 10_000), InvalidRequestError);

      expect(error.status).toBe(400);
      expect(error.message).toBe(
        `Inference-Header-Content-Length must be the JSON header's length in bytes, got '${value}'`,
      );
    },
  );

  it("refuses a length past the end of the body, naming both", () => {
    const error = thrownBy(() => parseHeaderLength("101", 100), InvalidRequestError);

    expect(error.message).toBe("Inference-Header-Content-Length is 101 but the body has only 100 bytes");
  });

  it("quotes at most 32 characters of a long refused value", () => {
    const error = thrownBy(() => parseHeaderLength("x".repeat(100), 10), InvalidRequestError);

    expect(error.message).toContain(`got '${"x".repeat(32)}'`);
    expect(error.message).not.toContain("x".repeat(33));
  });
});

describe("headerLengthFromContentType", () => {
  it("takes the json-header-size parameter of SageMaker's Triton content type", () => {
    expect(
      headerLengthFromContentType("application/vnd.sagemaker-triton.binary+json;json-header-size=123"),
    ).toBe("123");
  });

  it("accepts spaces after the semicolon, other parameters and any letter case", () => {
    expect(
      headerLengthFromContentType(
        "application/vnd.sagemaker-triton.binary+json; charset=utf-8;  JSON-Header-Size=77",
      ),
    ).toBe("77");
  });

  it("gives the value as sent, for parseHeaderLength to judge", () => {
    expect(
      headerLengthFromContentType("application/vnd.sagemaker-triton.binary+json;json-header-size=abc"),
    ).toBe("abc");
  });

  it("is undefined when the content type carries no json-header-size, or there is none", () => {
    expect(headerLengthFromContentType("application/json")).toBeUndefined();
    expect(headerLengthFromContentType("application/vnd.sagemaker-triton.binary+json")).toBeUndefined();
    expect(headerLengthFromContentType(undefined)).toBeUndefined();
  });
});

describe("parseInferBody with binary data", () => {
  it("decodes inputs at unaligned offsets into the typed arrays onnxruntime takes", () => {
    const strings = ["", "héllo", "日本語 ✓"];
    const body = binaryBody(
      {
        inputs: [
          binaryInput("f", "FP32", [1, 3], 12),
          binaryInput("i", "INT64", [2], 16),
          binaryInput("h", "FP16", [3], 6),
          binaryInput("b", "BOOL", [3], 3),
          binaryInput("s", "BYTES", [3], bytesElements(...strings.map((s) => Buffer.from(s))).length),
        ],
      },
      float32Bytes([1.5, -2.25, 3.0e-38]),
      int64Bytes([-(2n ** 63n), 2n ** 53n + 1n]),
      uint16Bytes([0x3c00, 0x8000, 0x7e01]),
      Uint8Array.of(1, 0, 1),
      bytesElements(...strings.map((s) => Buffer.from(s))),
    );

    const [f, i, h, b, s] = parseInferBody(body).inputs;

    expect(f!.data).toBeInstanceOf(Float32Array);
    expect(Array.from(f!.data as Float32Array)).toEqual([1.5, -2.25, Math.fround(3.0e-38)]);
    expect(i!.data).toBeInstanceOf(BigInt64Array);
    expect(Array.from(i!.data as BigInt64Array)).toEqual([-(2n ** 63n), 2n ** 53n + 1n]);
    expect(h!.data).toBeInstanceOf(Uint16Array);
    expect(Array.from(h!.data as Uint16Array)).toEqual([0x3c00, 0x8000, 0x7e01]);
    expect(b!.data).toBeInstanceOf(Uint8Array);
    expect(Array.from(b!.data as Uint8Array)).toEqual([1, 0, 1]);
    // BYTES stay bytes (an image task's JPEG); decodeInput reads them as the UTF-8 text onnxruntime takes.
    expect((s!.data as Uint8Array[]).map((element) => Buffer.from(element).toString())).toEqual(strings);
    expect(decodeInput(s!).data).toEqual(strings);
  });

  it("puts fixed-size inputs in shared memory that the session's worker reads in place", () => {
    const body = binaryBody(
      { inputs: [binaryInput("f", "FP32", [2], 8), binaryInput("b", "BOOL", [1], 1)] },
      float32Bytes([1, 2]),
      Uint8Array.of(1),
    );

    const [f, b] = parseInferBody(body).inputs;

    expect((f!.data as Float32Array).buffer).toBeInstanceOf(SharedArrayBuffer);
    expect((b!.data as Uint8Array).buffer).toBeInstanceOf(SharedArrayBuffer);
  });

  it("copies the data, so that reusing the body's buffer leaves the decoded input as it was", () => {
    const body = binaryBody({ inputs: [binaryInput("f", "FP32", [1], 4)] }, float32Bytes([7]));

    const [f] = parseInferBody(body).inputs;
    body.bytes.fill(0);

    expect(Array.from(f!.data as Float32Array)).toEqual([7]);
  });

  it("keeps JSON inputs as sent and takes binary bytes in turn for the inputs around them", () => {
    const body = binaryBody(
      {
        id: "r1",
        inputs: [
          binaryInput("a", "INT32", [1], 4),
          { name: "j", datatype: "FP32", shape: [2], data: [0.5, 1] },
          binaryInput("c", "UINT8", [2], 2),
        ],
        outputs: [{ name: "y" }],
      },
      Buffer.from(Int32Array.of(-7).buffer),
      Uint8Array.of(200, 3),
    );

    const request = parseInferBody(body);

    expect(request.id).toBe("r1");
    expect(request.outputs).toEqual([{ name: "y" }]);
    expect(Array.from(request.inputs[0]!.data as Int32Array)).toEqual([-7]);
    expect(request.inputs[1]!.data).toEqual([0.5, 1]);
    expect(Array.from(request.inputs[2]!.data as Uint8Array)).toEqual([200, 3]);
  });

  it("decodes an input of no elements with binary_data_size 0", () => {
    const body = binaryBody({ inputs: [binaryInput("e", "FP32", [0, 4], 0)] });

    const [e] = parseInferBody(body).inputs;

    expect(e!.data).toBeInstanceOf(Float32Array);
    expect((e!.data as Float32Array).length).toBe(0);
  });

  describe("refuses with a 400 naming the input", () => {
    it("a binary_data_size that is not the shape's elements times the element size", () => {
      const error = parseError(
        binaryBody({ inputs: [binaryInput("x", "FP32", [2], 12)] }, float32Bytes([1, 2, 3])),
      );

      expect(error.status).toBe(400);
      expect(error.message).toBe("input 'x': binary_data_size is 12 bytes but FP32 of shape [2] takes 8");
    });

    it("binary_data_sizes that add up to more than the bytes after the header", () => {
      const error = parseError(
        binaryBody(
          { inputs: [binaryInput("x", "FP32", [1], 4), binaryInput("y", "FP32", [2], 8)] },
          float32Bytes([1, 2]),
        ),
      );

      expect(error.message).toBe(
        "input 'y' has binary_data_size 8, but only 4 bytes of binary data are left after the JSON header",
      );
    });

    it("an input that has both data and binary_data_size", () => {
      const error = parseError(
        binaryBody({ inputs: [{ ...binaryInput("x", "FP32", [1], 4), data: [1] }] }, float32Bytes([1])),
      );

      expect(error.message).toBe("input 'x' has both data and parameters.binary_data_size; send one of them");
    });

    it.each([-4, 1.5, "4"])("a binary_data_size of %j", (size) => {
      const error = parseError(
        binaryBody(
          { inputs: [{ name: "x", datatype: "FP32", shape: [1], parameters: { binary_data_size: size } }] },
          float32Bytes([1]),
        ),
      );

      expect(error.message).toBe("'x': parameters.binary_data_size must be a non-negative integer");
    });

    it("a datatype the protocol does not have", () => {
      const error = parseError(binaryBody({ inputs: [binaryInput("x", "FP8", [1], 1)] }, Uint8Array.of(0)));

      expect(error.message).toBe("input 'x': unsupported datatype FP8");
    });

    it("a BOOL byte other than 0 or 1, naming the element", () => {
      const error = parseError(
        binaryBody({ inputs: [binaryInput("b", "BOOL", [3], 3)] }, Uint8Array.of(1, 2, 0)),
      );

      expect(error.message).toBe("input 'b' element 1: BOOL elements are one byte, 0 or 1, got 2");
    });

    it("a BYTES element whose length runs past the input's binary data", () => {
      const data = Buffer.concat([bytesElements(Buffer.from("ok")), Buffer.from([9, 0, 0, 0, 0x61])]);
      const error = parseError(binaryBody({ inputs: [binaryInput("s", "BYTES", [2], data.length)] }, data));

      expect(error.message).toBe(
        "input 's' element 1: its length is 9 bytes, past the end of the binary data",
      );
    });

    it("a BYTES length prefix cut off by the end of the input's binary data", () => {
      const data = Buffer.concat([bytesElements(Buffer.from("ok")), Buffer.from([1, 0])]);
      const error = parseError(binaryBody({ inputs: [binaryInput("s", "BYTES", [2], data.length)] }, data));

      expect(error.message).toBe(
        "input 's' element 1: its 4-byte length is cut off by the end of the binary data",
      );
    });

    it("a BYTES element that is not UTF-8, once decoded for a model that takes text", () => {
      const data = bytesElements(Buffer.from("fine"), Uint8Array.of(0xc3, 0x28));
      const [input] = parseInferBody(
        binaryBody({ inputs: [binaryInput("s", "BYTES", [2], data.length)] }, data),
      ).inputs;
      const error = thrownBy(() => decodeInput(input!), InvalidRequestError);

      expect(error.message).toBe("input 's' element 1: BYTES elements must be UTF-8 text here");
    });

    it("BYTES binary data with another number of elements than the shape holds", () => {
      const data = bytesElements(Buffer.from("a"), Buffer.from("b"), Buffer.from("c"));
      const error = parseError(binaryBody({ inputs: [binaryInput("s", "BYTES", [2], data.length)] }, data));

      expect(error.message).toBe("input 's': binary data holds 3 BYTES elements but its shape needs 2");
    });
  });

  it("refuses bytes left over after the last binary input, counting both", () => {
    const error = parseError(
      binaryBody({ inputs: [binaryInput("x", "FP32", [1], 4)] }, float32Bytes([1, 2])),
    );

    expect(error.message).toBe(
      "the body has 8 bytes after the JSON header, but the inputs' binary_data_size add up to 4",
    );
  });

  it("refuses an empty JSON header", () => {
    const error = parseError({ bytes: float32Bytes([1]), headerLength: 0 });

    expect(error.message).toBe("the JSON header of the request is empty");
  });

  it("refuses a header that is not JSON with the JSON parser's 400", () => {
    const bytes = Buffer.from('{"inputs": [');

    const error = parseError({ bytes, headerLength: bytes.length });

    expect(error.message).toMatch(/^request body is not valid JSON: /);
  });
});

describe("parseInferBody with a JSON body", () => {
  it("parses a request without binary data as plain JSON", () => {
    const request = parseInferBody(
      JSON.stringify({ inputs: [{ name: "x", datatype: "INT32", shape: [2], data: [1, 2] }] }),
    );

    expect(request.inputs).toEqual([{ name: "x", datatype: "INT32", shape: [2], data: [1, 2] }]);
  });

  it("refuses an input with binary_data_size, naming the input and the missing header", () => {
    const body = JSON.stringify({ inputs: [binaryInput("x", "FP32", [1], 4)] });

    const error = parseError(body);

    expect(error.status).toBe(400);
    expect(error.message).toBe(
      "input 'x' has parameters.binary_data_size, but the request has no Inference-Header-Content-Length header",
    );
  });
});

describe("binaryOutputsOf", () => {
  const inputs = [{ name: "x", datatype: "FP32", shape: [1], data: [1] }];

  it("sends no output as binary data unless asked", () => {
    const binary = binaryOutputsOf({ inputs });

    expect(binary("y")).toBe(false);
  });

  it("sends every output as binary data when the request sets binary_data_output", () => {
    const binary = binaryOutputsOf({ inputs, parameters: { binary_data_output: true } });

    expect(binary("y")).toBe(true);
    expect(binary("z")).toBe(true);
  });

  it("keeps an output with binary_data: false as JSON when the request asks for binary outputs", () => {
    const binary = binaryOutputsOf({
      inputs,
      parameters: { binary_data_output: true },
      outputs: [{ name: "y", parameters: { binary_data: false } }],
    });

    expect(binary("y")).toBe(false);
    expect(binary("z")).toBe(true);
  });

  it("sends an output with binary_data: true as binary when the request does not ask for binary outputs", () => {
    const binary = binaryOutputsOf({
      inputs,
      parameters: { binary_data_output: false },
      outputs: [{ name: "y", parameters: { binary_data: true } }, { name: "z" }],
    });

    expect(binary("y")).toBe(true);
    expect(binary("z")).toBe(false);
  });

  it("refuses a binary_data_output that is not a boolean with a 400", () => {
    const request: InferRequest = { inputs, parameters: { binary_data_output: "true" } };

    const error = thrownBy(() => binaryOutputsOf(request), InvalidRequestError);

    expect(error.status).toBe(400);
    expect(error.message).toBe("parameters.binary_data_output must be true or false");
  });

  it("refuses an output's binary_data that is not a boolean, naming the output", () => {
    const request: InferRequest = { inputs, outputs: [{ name: "y", parameters: { binary_data: 1 } }] };

    const error = thrownBy(() => binaryOutputsOf(request), InvalidRequestError);

    expect(error.message).toBe("output 'y': parameters.binary_data must be true or false");
  });
});

describe("encodeInferResponse", () => {
  const probabilities: NamedTensor = {
    name: "p",
    type: "float32",
    dims: [1, 2],
    data: Float32Array.of(0.25, -1),
  };
  const labels: NamedTensor = { name: "label", type: "int64", dims: [1], data: BigInt64Array.of(3n) };
  const words: NamedTensor = { name: "w", type: "string", dims: [2], data: ["", "é"] };
  // A multi-byte model name: the header's length counts bytes, not characters.
  const response: TensorResponse = {
    model_name: "modèle",
    model_version: "2",
    id: "r1",
    outputs: [probabilities, labels, words],
  };

  function header(encoded: { bytes: Buffer; headerLength: number }): Record<string, unknown> {
    return JSON.parse(encoded.bytes.subarray(0, encoded.headerLength).toString("utf8"));
  }

  it("answers the plain JSON response when no output is binary", () => {
    const encoded = encodeInferResponse(response, () => false);

    expect(encoded).toEqual({ json: inferResponseJson(response) });
  });

  it("writes binary outputs with binary_data_size and no data in the header, and the others as JSON data", () => {
    const encoded = encodeInferResponse(response, (name) => name !== "label");

    if (!("bytes" in encoded)) throw new Error("expected a binary response");
    expect(header(encoded)).toEqual({
      model_name: "modèle",
      model_version: "2",
      id: "r1",
      outputs: [
        { name: "p", datatype: "FP32", shape: [1, 2], parameters: { binary_data_size: 8 } },
        { name: "label", datatype: "INT64", shape: [1], data: [3] },
        { name: "w", datatype: "BYTES", shape: [2], parameters: { binary_data_size: 10 } },
      ],
    });
  });

  it("puts the binary outputs' bytes after the header in output order, the header's length in bytes", () => {
    const encoded = encodeInferResponse(response, (name) => name !== "label");

    if (!("bytes" in encoded)) throw new Error("expected a binary response");
    const text = encoded.bytes.subarray(0, encoded.headerLength).toString("utf8");
    expect(text.endsWith("}")).toBe(true);
    expect(Buffer.byteLength(text)).toBe(encoded.headerLength);
    expect(encoded.bytes.subarray(encoded.headerLength)).toEqual(
      Buffer.concat([float32Bytes([0.25, -1]), Buffer.from([0, 0, 0, 0, 2, 0, 0, 0, 0xc3, 0xa9])]),
    );
  });

  it("leaves model_version and id out of the header when the response has none", () => {
    const encoded = encodeInferResponse({ model_name: "m", outputs: [probabilities] }, () => true);

    if (!("bytes" in encoded)) throw new Error("expected a binary response");
    expect(Object.keys(header(encoded))).toEqual(["model_name", "outputs"]);
  });

  it("answers a response whose header and data take exactly maxBytes", () => {
    const unlimited = encodeInferResponse({ model_name: "m", outputs: [probabilities] }, () => true);
    if (!("bytes" in unlimited)) throw new Error("expected a binary response");

    const limited = encodeInferResponse(
      { model_name: "m", outputs: [probabilities], maxBytes: unlimited.bytes.length },
      () => true,
    );

    expect(limited).toEqual(unlimited);
  });

  it("refuses with a 413 naming the limit when the binary data alone pass maxBytes", () => {
    const error = thrownBy(
      () => encodeInferResponse({ model_name: "m", outputs: [probabilities], maxBytes: 7 }, () => true),
      ResponseTooLargeError,
    );

    expect(error.status).toBe(413);
    expect(error.limitBytes).toBe(7);
    expect(error.message).toMatch(
      /^the outputs' binary data take at least 8 bytes; they would exceed the response limit of 7 bytes/,
    );
  });

  it("refuses with a 413 when the data fit maxBytes but the header with them does not", () => {
    const error = thrownBy(
      () => encodeInferResponse({ model_name: "m", outputs: [probabilities], maxBytes: 20 }, () => true),
      ResponseTooLargeError,
    );

    expect(error.message).toMatch(
      /^the response is \d+ bytes; it would exceed the response limit of 20 bytes/,
    );
  });
});

describe("encodeBinaryRequest", () => {
  it("writes a request that parseInferBody reads back to the same tensors, every output asked for as binary", () => {
    const inputs: NamedTensor[] = [
      { name: "f", type: "float32", dims: [2], data: Float32Array.of(Number.NaN, -0) },
      { name: "i", type: "int64", dims: [1], data: BigInt64Array.of(-(2n ** 63n)) },
      { name: "h", type: "float16", dims: [1], data: Uint16Array.of(0x7c00) },
      { name: "b", type: "bool", dims: [2], data: Uint8Array.of(0, 1) },
      { name: "s", type: "string", dims: [2], data: ["", "ü"] },
    ];

    const request = parseInferBody(encodeBinaryRequest(inputs, ["y", "z"]));

    expect(request.inputs.map(({ name, datatype, shape }) => ({ name, datatype, shape }))).toEqual([
      { name: "f", datatype: "FP32", shape: [2] },
      { name: "i", datatype: "INT64", shape: [1] },
      { name: "h", datatype: "FP16", shape: [1] },
      { name: "b", datatype: "BOOL", shape: [2] },
      { name: "s", datatype: "BYTES", shape: [2] },
    ]);
    request.inputs.forEach((input, i) => {
      expect(decodeInput(input).data, input.name).toEqual(inputs[i]!.data);
    });
    expect(Object.is((request.inputs[0]!.data as Float32Array)[1], -0)).toBe(true);
    const binary = binaryOutputsOf(request);
    expect([binary("y"), binary("z")]).toEqual([true, true]);
  });
});

describe("tensorBytes", () => {
  it("writes each string as a 4-byte little-endian length and its UTF-8 bytes", () => {
    const bytes = tensorBytes({ type: "string", data: ["", "é", "abc"] });

    expect(Array.from(bytes)).toEqual([0, 0, 0, 0, 2, 0, 0, 0, 0xc3, 0xa9, 3, 0, 0, 0, 0x61, 0x62, 0x63]);
  });

  it("writes a string longer than 255 bytes with its length's higher bytes", () => {
    const bytes = tensorBytes({ type: "string", data: ["x".repeat(0x1_02)] });

    expect(Array.from(bytes.subarray(0, 4))).toEqual([0x02, 0x01, 0, 0]);
    expect(bytes.length).toBe(4 + 0x102);
  });

  it("gives a typed array's own bytes only, not the rest of the buffer it views", () => {
    const whole = Float32Array.of(1, 2, 3, 4);

    const bytes = tensorBytes({ type: "float32", data: whole.subarray(1, 3) });

    expect(Buffer.from(bytes)).toEqual(float32Bytes([2, 3]));
  });
});

describe("parseInferBody on a body in shared memory", () => {
  function sharedBody(headerLength: number): { bytes: Buffer; headerLength: number } {
    const json = JSON.stringify({
      inputs: [{ name: "x", shape: [4], datatype: "FP32", parameters: { binary_data_size: 16 } }],
    });
    const bytes = Buffer.from(new SharedArrayBuffer(headerLength + 16));
    bytes.write(json.padEnd(headerLength, " "), 0, "latin1");
    new Float32Array(bytes.buffer, headerLength, 4).set([1.5, -2, 3.25, 0]);
    return { bytes, headerLength };
  }

  it("reads a tensor that starts 64-byte aligned in place, without a copy", () => {
    const body = sharedBody(128);

    const data = parseInferBody(body).inputs[0]!.data as Float32Array;

    expect(data.buffer).toBe(body.bytes.buffer);
    expect(data.byteOffset).toBe(128);
    expect(Array.from(data)).toEqual([1.5, -2, 3.25, 0]);
  });

  it("copies a tensor that is not 64-byte aligned into shared memory of its own", () => {
    const body = sharedBody(132);

    const data = parseInferBody(body).inputs[0]!.data as Float32Array;

    expect(data.buffer).not.toBe(body.bytes.buffer);
    expect(data.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(Array.from(data)).toEqual([1.5, -2, 3.25, 0]);
  });
});
