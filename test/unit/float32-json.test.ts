import { describe, expect, it } from "vitest";
import { InvalidRequestError } from "#core/errors.ts";
import { mulberry32 } from "#core/tensor/seeded-random.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import { float32ArrayJson, readFloat32Array, readFloat32List } from "#core/v2/float32-json.ts";
import { parseInferRequestBody } from "#core/v2/parse.ts";
import { decodeInput, encodeOutput, inferResponseJson, tensorListJson } from "#core/v2/tensor-codec.ts";
import { generalPath, row } from "../support/fp32-requests.ts";

/** Float32 values from random bit patterns: every exponent, both signs, subnormals, NaN, infinities. */
function randomFloat32Bits(count: number, seed: number): Float32Array {
  const next = mulberry32(seed);
  const words = Uint32Array.from({ length: count }, () => Math.floor(next() * 2 ** 32));
  return new Float32Array(words.buffer);
}

/** What the general path makes of a JSON array of numbers: JSON.parse, then a float32 store. */
function reference(text: string): Float32Array {
  return Float32Array.from(JSON.parse(text) as number[]);
}

function fastRead(text: string, count: number): Float32Array | undefined {
  const out = new Float32Array(count);
  return readFloat32Array(Buffer.from(text, "latin1"), 0, out) ? out : undefined;
}

function expectSameFloats(actual: Float32Array | undefined, expected: Float32Array) {
  expect(actual).toBeDefined();
  expect(actual!.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    if (!Object.is(actual![i], expected[i])) {
      expect.fail(`element ${i}: got ${actual![i]}, JSON.parse gives ${expected[i]}`);
    }
  }
}

describe("readFloat32Array", () => {
  it("matches JSON.parse on doubles written with 17 significant digits", () => {
    const next = mulberry32(1);
    const values = Array.from({ length: 20_000 }, () => (next() - 0.5) * 10 ** Math.floor(next() * 60 - 30));
    const text = JSON.stringify(values);
    expectSameFloats(fastRead(text, values.length), reference(text));
  });

  it("matches JSON.parse on decimals of every length and exponent form", () => {
    const next = mulberry32(2);
    const forms = [
      () => (next() * 1000).toFixed(Math.floor(next() * 25)),
      () => (next() - 0.5).toExponential(Math.floor(next() * 20)),
      () => String(Math.floor(next() * 2 ** 53) * (next() < 0.5 ? -1 : 1)),
      () => `0.${"0".repeat(Math.floor(next() * 40))}${Math.floor(next() * 1e17)}`,
      () => `${Math.floor(next() * 1e25)}${"0".repeat(Math.floor(next() * 20))}`,
      () => `${Math.floor(next() * 1000)}E${next() < 0.5 ? "+" : "-"}${Math.floor(next() * 60)}`,
    ];
    const values = Array.from({ length: 30_000 }, (_, i) => (forms[i % forms.length] as () => string)());
    const text = `[ ${values.join(" ,\n\t")} ]`;
    expectSameFloats(fastRead(text, values.length), reference(text));
  });

  it("matches JSON.parse on decimals next to float32 rounding boundaries", () => {
    // The exact midpoint between neighbouring float32s, written to 16-20 digits, falls on either side.
    const next = mulberry32(3);
    const texts: string[] = [];
    const pair = new Float32Array(2);
    const words = new Uint32Array(pair.buffer);
    for (let i = 0; i < 5_000; i++) {
      pair[0] = (next() - 0.5) * 10 ** Math.floor(next() * 30 - 15);
      words[1] = (words[0] as number) + 1;
      const midpoint = ((pair[0] as number) + (pair[1] as number)) / 2;
      texts.push(
        midpoint.toPrecision(16),
        midpoint.toPrecision(17),
        midpoint.toPrecision(20),
        String(midpoint),
      );
    }
    const text = `[${texts.join(",")}]`;
    expectSameFloats(fastRead(text, texts.length), reference(text));
  });

  it("reads zeros, signs and values beyond the float32 range as JSON.parse does", () => {
    const text = "[0, -0, 0.0, -0.0e5, 0e-400, 1e400, -1e400, 1e-400, 3.4028235677973366e38, 1.4e-45, 7e-46]";
    expectSameFloats(fastRead(text, 11), reference(text));
  });

  it("reads an empty array only into an empty tensor", () => {
    expect(fastRead("[]", 0)).toEqual(new Float32Array(0));
    expect(fastRead("[ ]", 1)).toBeUndefined();
  });

  it.each([
    ["a leading zero", "[01]"],
    ["a bare dot", "[1.]"],
    ["a leading dot", "[.5]"],
    ["a plus sign", "[+1]"],
    ["an empty exponent", "[1e]"],
    ["a double minus", "[--1]"],
    ["a trailing comma", "[1,]"],
    ["a missing comma", "[1 2]"],
    ["a string", '[1,"NaN"]'],
    ["a literal", "[true]"],
    ["a nested array", "[[1]]"],
    ["an unclosed array", "[1"],
    ["a letter after fraction zeros", "[0.0000a]"],
    ["a letter after four fraction digits", "[1.2345a]"],
  ])("gives up on %s", (_, text) => {
    expect(fastRead(text, 1)).toBeUndefined();
    expect(fastRead(text, 2)).toBeUndefined();
  });

  it("reads a list into a buffer from an offset and says where it ended", () => {
    const out = Float32Array.of(9, 9, 9, 9, 9);
    const read = { end: 0, count: 0 };
    const text = '{"data": [ 0.25 , -1.5e1,12345678.5 ] , "x": 1}';
    expect(readFloat32List(Buffer.from(text, "latin1"), 9, out, 1, read)).toBe(true);
    expect(read).toEqual({ end: text.indexOf("]") + 1, count: 3 });
    expect(out).toEqual(Float32Array.of(9, 0.25, -15, 12345678.5, 9));
    expect(readFloat32List(Buffer.from("[1,2,3]"), 0, out, 3, read)).toBe(false);
  });

  it("gives up when the array holds more or fewer elements than the tensor", () => {
    expect(fastRead("[1,2,3]", 2)).toBeUndefined();
    expect(fastRead("[1,2,3]", 4)).toBeUndefined();
    expect(fastRead("[1,2,3]", 3)).toEqual(Float32Array.of(1, 2, 3));
  });
});

describe("float32ArrayJson", () => {
  it("writes every float32 so that it reads back to the same float32", () => {
    const floats = randomFloat32Bits(200_000, 4);
    const values = Array.from(floats, (value) => (Number.isFinite(value) ? value : String(value)));
    const text = float32ArrayJson(values);
    const back = JSON.parse(text!) as (number | string)[];
    for (let i = 0; i < floats.length; i++) {
      const read = Math.fround(Number(back[i]));
      if (!(Object.is(read, floats[i]) || (Number.isNaN(read) && Number.isNaN(floats[i])))) {
        expect.fail(`element ${i}: ${floats[i]} was written as ${back[i]}`);
      }
    }
  });

  it("writes at most 9 significant digits, laid out as JavaScript prints numbers", () => {
    const floats = randomFloat32Bits(50_000, 5).filter(Number.isFinite);
    const text = float32ArrayJson(Array.from(floats))!;
    const back = JSON.parse(text) as number[];
    expect(text).toBe(JSON.stringify(back));
    // Exponents beyond what one exact power of ten reaches keep the double's own form.
    const inRange = back.filter((value) => Math.abs(value) >= 1e-12 && Math.abs(value) < 1e28);
    expect(inRange.length).toBeGreaterThan(back.length / 3);
    for (const value of inRange) {
      expect(value.toExponential().split("e")[0]!.replace(/[-.]/g, "").length).toBeLessThanOrEqual(9);
    }
  });

  it("writes short decimals for float32s that came from short decimals", () => {
    const values = [0.1, 0.3, 1.1, 100.25, 1e-7, 123456.7, 6.02e23, 16777216, 0.5].map(Math.fround);
    expect(float32ArrayJson(values)).toBe("[0.1,0.3,1.1,100.25,1e-7,123456.7,6.02e+23,16777216,0.5]");
  });

  it("keeps negative zero and quotes non-finite values", () => {
    expect(float32ArrayJson([0, -0, "NaN", "Infinity", "-Infinity"])).toBe(
      '[0,-0,"NaN","Infinity","-Infinity"]',
    );
  });

  it("writes a number that is not a float32 value in full, as JSON.stringify does", () => {
    const doubles = [0.1, Math.PI, 1e300, -5e-324, 2 ** 60 + 2 ** 10];
    expect(float32ArrayJson(doubles)).toBe(JSON.stringify(doubles));
  });

  it("declines anything but numbers and the non-finite names", () => {
    expect(float32ArrayJson([1, "one"])).toBeUndefined();
    expect(float32ArrayJson([1, [2]])).toBeUndefined();
    expect(float32ArrayJson([null])).toBeUndefined();
  });

  it("handles outputs larger than its reusable buffer", () => {
    const floats = randomFloat32Bits(100_000, 6).map((value) => (Number.isFinite(value) ? value : 1));
    const back = JSON.parse(float32ArrayJson(floats)!) as number[];
    expect(Float32Array.from(back)).toEqual(floats);
  });
});

function errorOf(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidRequestError);
    return (error as Error).message;
  }
  return "no error";
}

describe("parseInferRequestBody's FP32 fast path", () => {
  it("decodes what the general path decodes, other fields included", () => {
    const body = JSON.stringify({
      id: "req-7",
      parameters: { priority: 2, tags: ["a", "b"], nested: { data: [1, 2] } },
      inputs: [
        { name: "x", shape: [2, 300], datatype: "FP32", data: row(600, 7), parameters: { data: "not it" } },
        { name: "mask", shape: [3], datatype: "BOOL", parameters: {}, data: [true, false, true] },
        {
          datatype: "FP32",
          data: [
            [1, 2],
            [3, 4],
          ],
          shape: [2, 2],
          name: "nested",
        },
      ],
      outputs: [{ name: "y", parameters: { binary_data: false } }],
    });
    const fast = parseInferRequestBody(body);
    expect(fast.inputs[0]!.data).toBeInstanceOf(Float32Array);
    expect({ ...fast, inputs: fast.inputs.map(decodeInput) }).toEqual(generalPath(body));
  });

  it("reads bodies larger than its reusable buffer, and a small one after them, as the general path does", () => {
    for (const count of [20_000, 600]) {
      const body = JSON.stringify({
        inputs: [{ name: "x", shape: [count], datatype: "FP32", data: row(count, 3) }],
      });
      const fast = parseInferRequestBody(body);
      expect(fast.inputs[0]!.data).toBeInstanceOf(Float32Array);
      expect({ ...fast, inputs: fast.inputs.map(decodeInput) }).toEqual(generalPath(body));
    }
  });

  it("finds data arrays written before the datatype, with any spacing", () => {
    const data = row(400, 8);
    const body = `{\n "inputs" : [ { "data" : [ ${data.join(" , ")} ] , "shape" : [ 400 ] , "name" : "x" , "datatype" : "FP32" } ] }`;
    const fast = parseInferRequestBody(body);
    expect(fast.inputs[0]!.data).toBeInstanceOf(Float32Array);
    expect(decodeInput(fast.inputs[0]!)).toEqual(generalPath(body).inputs[0]);
  });

  it.each([
    ["an escaped character", (data: number[]) => ({ id: 'say "hi"', data })],
    ["non-ASCII text", (data: number[]) => ({ id: "naïve", data })],
    // Beyond Latin-1: two bytes in UTF-8, and its low byte alone is a quote.
    ["a character whose low byte is a quote", (data: number[]) => ({ id: "\u0122", data })],
    ["an INT64 input", (data: number[]) => ({ datatype: "INT64", data: data.map(Math.round) })],
    ["a NaN element", (data: number[]) => ({ data: [...data.slice(1), "NaN"] })],
    ["nested data", (data: number[]) => ({ data: [data.slice(0, 250), data.slice(250)], shape: [2, 250] })],
  ])("leaves %s to the general path, with the same result", (_, change) => {
    const body = JSON.stringify({
      id: "r",
      inputs: [{ name: "x", shape: [500], datatype: "FP32", ...change(row(500, 9)) }],
    });
    const fast = parseInferRequestBody(body);
    expect({ ...fast, inputs: fast.inputs.map(decodeInput) }).toEqual(generalPath(body));
  });

  it.each([
    ["too few elements", { shape: [501] }],
    ["too many elements", { shape: [499] }],
    ["a shape far larger than the data", { shape: [1e9, 1e9] }],
    ["a negative dimension", { shape: [-500] }],
    ["a missing name", { name: undefined }],
  ])("answers %s with the general path's error", (_, change) => {
    const body = JSON.stringify({
      inputs: [{ name: "x", shape: [500], datatype: "FP32", data: row(500, 10), ...change }],
    });
    const expected = errorOf(() => generalPath(body).inputs);
    expect(expected).not.toBe("no error");
    expect(errorOf(() => parseInferRequestBody(body).inputs.map(decodeInput))).toBe(expected);
  });

  it("reads several FP32 inputs in one pass, each into its own array", () => {
    const body = JSON.stringify({
      inputs: [
        { name: "a", shape: [300], datatype: "FP32", data: row(300, 15) },
        { name: "b", shape: [3, 100], datatype: "FP32", data: row(300, 16) },
      ],
    });
    const fast = parseInferRequestBody(body);
    expect(fast.inputs.map((input) => input.data instanceof Float32Array)).toEqual([true, true]);
    expect({ ...fast, inputs: fast.inputs.map(decodeInput) }).toEqual(generalPath(body));
  });

  it("answers a body cut short after a longer one with the general path's error", () => {
    const body = JSON.stringify({
      inputs: [{ name: "x", shape: [600], datatype: "FP32", data: row(600, 17) }],
    });
    parseInferRequestBody(body);
    const cut = body.slice(0, -3);
    const expected = errorOf(() => generalPath(cut));
    expect(expected).toMatch(/^request body is not valid JSON: /);
    expect(errorOf(() => parseInferRequestBody(cut))).toBe(expected);
  });

  it("answers a malformed document with JSON.parse's message", () => {
    const body = `{"inputs":[{"name":"x","shape":[500],"datatype":"FP32","data":[${row(500, 11).join(",")}]}],}`;
    expect(errorOf(() => parseInferRequestBody(body))).toMatch(/^request body is not valid JSON: /);
  });

  it("takes the key JSON.parse takes when one is given twice", () => {
    const body = `{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[${row(500, 12).join(",")}],"data":[1,2]}]}`;
    expect(Array.from(decodeInput(parseInferRequestBody(body).inputs[0]!).data as Float32Array)).toEqual([
      1, 2,
    ]);
  });
});

describe("inferResponseJson", () => {
  it("is JSON.stringify's document of the encoded response, with FP32 and FP16 data in short form", () => {
    const floats = randomFloat32Bits(1000, 13).filter(Number.isFinite);
    const outputs: NamedTensor[] = [
      { name: "p", type: "float32", dims: [floats.length], data: floats },
      // 0.0999755859375 and NaN as float16 bits.
      { name: "h", type: "float16", dims: [2], data: Uint16Array.of(0x2e66, 0x7e00) },
      { name: "label", type: "string", dims: [2], data: ["setosa", 'a "quoted" ✓'] },
      { name: "big", type: "int64", dims: [1], data: BigInt64Array.of(9223372036854775807n) },
      { name: "d", type: "float64", dims: [1], data: Float64Array.of(0.1) },
    ];
    const response = { model_name: "m", model_version: "3", id: "abc", outputs };
    const text = inferResponseJson(response);
    const encoded = { ...response, outputs: outputs.map(encodeOutput) };
    const parsed = JSON.parse(text) as typeof encoded;
    const general = JSON.parse(JSON.stringify(encoded)) as typeof encoded;
    expect(Float32Array.from(parsed.outputs[0]!.data as number[])).toEqual(floats);
    expect({ ...parsed, outputs: parsed.outputs.slice(2) }).toEqual({
      ...general,
      outputs: general.outputs.slice(2),
    });
    expect(parsed.outputs.map(({ data, ...head }) => head)).toEqual(
      general.outputs.map(({ data, ...head }) => head),
    );
    expect(Object.keys(parsed)).toEqual(Object.keys(encoded));
    expect(parsed.outputs.map((output) => Object.keys(output))).toEqual(
      encoded.outputs.map((output) => Object.keys(output)),
    );
    expect(text).toContain('"data":[0.099975586,"NaN"]');
    expect(text).toContain('"data":[9223372036854775807]');
    expect(text.length).toBeLessThan(JSON.stringify(encoded).length);
  });

  it("writes a Float32Array as the same text as its encoded values", () => {
    const floats = randomFloat32Bits(20_000, 14);
    const view = floats.subarray(7, 19_000);
    const encoded = encodeOutput({ name: "y", type: "float32", dims: [view.length], data: view }).data;
    expect(float32ArrayJson(view)).toBe(float32ArrayJson(encoded));
    expect(float32ArrayJson(Float32Array.of(0, -0, Number.NaN, Infinity, -Infinity, 1e-45))).toBe(
      '[0,-0,"NaN","Infinity","-Infinity",1.401298464324817e-45]',
    );
  });

  it("writes tensor lists for requests the same way", () => {
    const tensors: NamedTensor[] = [{ name: "x", type: "float32", dims: [2], data: Float32Array.of(0.1, 2) }];
    expect(tensorListJson(tensors)).toBe('[{"name":"x","datatype":"FP32","shape":[2],"data":[0.1,2]}]');
  });
});
