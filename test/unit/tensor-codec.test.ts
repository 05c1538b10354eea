import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { InvalidRequestError } from "#core/errors.ts";
import type { V2Datatype } from "#core/model.ts";
import { fromFloat16Bits, toFloat16Bits } from "#core/tensor/float16.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import { parseJsonBody } from "#core/v2/parse.ts";
import { decodeInput, encodeOutput, hasRoundedIntegers } from "#core/v2/tensor-codec.ts";
import { buildDatatypeZooModel } from "../../models/zoo.ts";

type TypedArrayConstructor = abstract new (...args: never[]) => unknown;

interface Sample {
  readonly data: readonly unknown[];
  readonly ort: string;
  readonly array: TypedArrayConstructor;
  /** The decoded elements, as the typed array (or string array) holds them. */
  readonly decoded: readonly unknown[];
  /** The encoded output's data as JSON text: exact, even beyond 2^53. */
  readonly json: string;
}

/** Four elements per datatype, shaped [2, 2], reaching both ends of every integer range. */
const SAMPLES: Record<V2Datatype, Sample> = {
  BOOL: {
    data: [true, false, false, true],
    ort: "bool",
    array: Uint8Array,
    decoded: [1, 0, 0, 1],
    json: "[true,false,false,true]",
  },
  UINT8: { data: [0, 1, 254, 255], ort: "uint8", array: Uint8Array, decoded: [0, 1, 254, 255], json: "" },
  UINT16: {
    data: [0, 1, 65534, 65535],
    ort: "uint16",
    array: Uint16Array,
    decoded: [0, 1, 65534, 65535],
    json: "",
  },
  UINT32: {
    data: [0, 1, 4294967294, 4294967295],
    ort: "uint32",
    array: Uint32Array,
    decoded: [0, 1, 4294967294, 4294967295],
    json: "",
  },
  UINT64: {
    data: [0, 1, "18446744073709551615", 18446744073709551614n],
    ort: "uint64",
    array: BigUint64Array,
    decoded: [0n, 1n, 18446744073709551615n, 18446744073709551614n],
    json: "[0,1,18446744073709551615,18446744073709551614]",
  },
  INT8: { data: [-128, -1, 0, 127], ort: "int8", array: Int8Array, decoded: [-128, -1, 0, 127], json: "" },
  INT16: {
    data: [-32768, -1, 0, 32767],
    ort: "int16",
    array: Int16Array,
    decoded: [-32768, -1, 0, 32767],
    json: "",
  },
  INT32: {
    data: [-2147483648, -1, 0, 2147483647],
    ort: "int32",
    array: Int32Array,
    decoded: [-2147483648, -1, 0, 2147483647],
    json: "",
  },
  INT64: {
    data: ["-9223372036854775808", -1, 0, 9223372036854775807n],
    ort: "int64",
    array: BigInt64Array,
    decoded: [-9223372036854775808n, -1n, 0n, 9223372036854775807n],
    json: "[-9223372036854775808,-1,0,9223372036854775807]",
  },
  FP16: {
    data: [1, -2, 0.5, 65504],
    ort: "float16",
    array: Uint16Array,
    decoded: [0x3c00, 0xc000, 0x3800, 0x7bff],
    json: "",
  },
  FP32: {
    data: [1.5, -0.25, 1024, 0.125],
    ort: "float32",
    array: Float32Array,
    decoded: [1.5, -0.25, 1024, 0.125],
    json: "",
  },
  FP64: {
    data: [0.1, -1e300, Math.PI, 5e-324],
    ort: "float64",
    array: Float64Array,
    decoded: [0.1, -1e300, Math.PI, 5e-324],
    json: "",
  },
  BYTES: {
    data: ["a", "héllo", "", "🙂"],
    ort: "string",
    array: Array,
    decoded: ["a", "héllo", "", "🙂"],
    json: "",
  },
};

const DATATYPES = Object.keys(SAMPLES) as V2Datatype[];

function expectedJson(datatype: V2Datatype): string {
  const sample = SAMPLES[datatype];
  return sample.json || JSON.stringify(sample.data);
}

function decode(datatype: string, data: unknown, shape: number[] = [2]) {
  return decodeInput({ name: "x", datatype, shape, data });
}

function decodeError(datatype: string, data: unknown, shape: number[] = [2]): InvalidRequestError {
  try {
    decode(datatype, data, shape);
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidRequestError);
    return error as InvalidRequestError;
  }
  throw new Error(`decoding ${datatype} ${String(data)} did not fail`);
}

describe("decodeInput", () => {
  it.each(DATATYPES)("decodes %s data into the typed array onnxruntime takes", (datatype) => {
    const sample = SAMPLES[datatype];

    const tensor = decodeInput({ name: "in", datatype, shape: [2, 2], data: sample.data });

    expect(tensor.name).toBe("in");
    expect(tensor.type).toBe(sample.ort);
    expect(tensor.dims).toEqual([2, 2]);
    expect(tensor.data).toBeInstanceOf(sample.array);
    expect(Array.from(tensor.data as ArrayLike<unknown>)).toEqual(sample.decoded);
  });

  it("accepts nested row-major arrays and decodes them like the flat array", () => {
    const flat = decodeInput({ name: "x", datatype: "INT32", shape: [2, 3], data: [1, 2, 3, 4, 5, 6] });

    const nested = decodeInput({
      name: "x",
      datatype: "INT32",
      shape: [2, 3],
      data: [
        [1, 2, 3],
        [4, 5, 6],
      ],
    });

    expect(nested).toEqual(flat);
  });

  it("accepts deeply nested data for a rank-3 tensor", () => {
    const tensor = decode(
      "FP32",
      [
        [[1], [2]],
        [[3], [4]],
      ],
      [2, 2, 1],
    );

    expect(Array.from(tensor.data as Float32Array)).toEqual([1, 2, 3, 4]);
  });

  it("decodes a scalar (shape []) from a one-element array", () => {
    const tensor = decode("FP64", [2.5], []);

    expect(tensor.dims).toEqual([]);
    expect(Array.from(tensor.data as Float64Array)).toEqual([2.5]);
  });

  it("rejects data whose element count does not match the shape, naming the input", () => {
    const error = decodeError("FP32", [1, 2, 3], [2, 2]);

    expect(error.status).toBe(400);
    expect(error.message).toBe("input 'x': data has 3 elements but shape [2, 2] needs 4");
  });

  it("rejects nested data with too many elements for the shape", () => {
    const error = decodeError(
      "FP32",
      [
        [1, 2],
        [3, 4],
      ],
      [3],
    );

    expect(error.message).toBe("input 'x': data has 4 elements but shape [3] needs 3");
  });

  it.each([
    ["a string", "1,2", 'the string "1,2"'],
    ["a number", 3, "number 3"],
    ["an object", { 0: 1, 1: 2 }, "an object"],
    ["null", null, "null"],
  ])("rejects data that is %s instead of an array", (_kind, data, described) => {
    const error = decodeError("FP32", data);

    expect(error.message).toBe(`input 'x': data must be an array, got ${described}`);
  });

  it("rejects a datatype the service does not serve", () => {
    const error = decodeError("BF16", [1, 2]);

    expect(error.message).toBe("input 'x': unsupported datatype BF16");
  });

  describe("integer datatypes", () => {
    const SMALL_INTEGERS = ["UINT8", "UINT16", "UINT32", "INT8", "INT16", "INT32"] as const;

    it.each([...SMALL_INTEGERS, "INT64", "UINT64"])("rejects a non-integer %s element", (datatype) => {
      const error = decodeError(datatype, [0, 1.5]);

      expect(error.message).toMatch(/^input 'x' element 1: expected an integer in \[/);
      expect(error.message).toMatch(new RegExp(`for ${datatype}, got number 1.5$`));
    });

    it.each(SMALL_INTEGERS)("rejects a %s element given as a string of digits", (datatype) => {
      const error = decodeError(datatype, [0, "1"]);

      expect(error.message).toMatch(/^input 'x' element 1: expected an integer in .* got the string "1"$/);
    });

    it.each([
      ["UINT8", -1, "[0, 255]"],
      ["UINT8", 256, "[0, 255]"],
      ["UINT16", -1, "[0, 65535]"],
      ["UINT16", 65536, "[0, 65535]"],
      ["UINT32", -1, "[0, 4294967295]"],
      ["UINT32", 4294967296, "[0, 4294967295]"],
      ["INT8", -129, "[-128, 127]"],
      ["INT8", 128, "[-128, 127]"],
      ["INT16", -32769, "[-32768, 32767]"],
      ["INT16", 32768, "[-32768, 32767]"],
      ["INT32", -2147483649, "[-2147483648, 2147483647]"],
      ["INT32", 2147483648, "[-2147483648, 2147483647]"],
    ])("rejects %s element %d as out of range %s", (datatype, value, range) => {
      const error = decodeError(datatype, [0, value]);

      expect(error.message).toBe(
        `input 'x' element 1: expected an integer in ${range} for ${datatype}, got number ${value}`,
      );
    });

    it.each([
      ["UINT64", -1, "number -1"],
      ["UINT64", "-1", 'the string "-1"'],
      ["UINT64", "18446744073709551616", 'the string "18446744073709551616"'],
      ["UINT64", 18446744073709551616n, "18446744073709551616"],
      ["INT64", "9223372036854775808", 'the string "9223372036854775808"'],
      ["INT64", 9223372036854775808n, "9223372036854775808"],
      ["INT64", "-9223372036854775809", 'the string "-9223372036854775809"'],
      ["INT64", -9223372036854775809n, "-9223372036854775809"],
    ])("rejects %s element %s as out of range", (datatype, value, described) => {
      const error = decodeError(datatype, [0, value]);

      expect(error.message).toMatch(/^input 'x' element 1: expected an integer in \[/);
      expect(error.message).toMatch(new RegExp(`for ${datatype}, got ${described}$`));
    });

    it("names the INT64 range and the string form in the message", () => {
      const error = decodeError("INT64", [0, true]);

      expect(error.message).toBe(
        "input 'x' element 1: expected an integer in [-9223372036854775808, 9223372036854775807] " +
          "(a JSON integer, or a string of digits) for INT64, got boolean true",
      );
    });

    it.each(["1.5", "abc", "", "1e3", " 1"])("rejects the INT64 string %j", (value) => {
      const error = decodeError("INT64", [0, value]);

      expect(error.message).toMatch(/^input 'x' element 1: expected an integer/);
    });

    it("refuses an INT64 JSON number beyond 2^53, whose digits may already be rounded", () => {
      const error = decodeError("INT64", [0, 2 ** 60]);

      expect(error.message).toMatch(/element 1: .* got number 1152921504606847000$/);
    });

    it("keeps INT64 and UINT64 values beyond 2^53 exact when given as bigint", () => {
      const int64 = decode("INT64", [9007199254740993n, -9007199254740993n]);
      const uint64 = decode("UINT64", [9007199254740993n, 18446744073709551615n]);

      expect(Array.from(int64.data as BigInt64Array)).toEqual([9007199254740993n, -9007199254740993n]);
      expect(Array.from(uint64.data as BigUint64Array)).toEqual([9007199254740993n, 18446744073709551615n]);
    });

    it("keeps INT64 values beyond 2^53 exact when given as strings of digits", () => {
      const tensor = decode("INT64", ["9007199254740993", "-9223372036854775807"]);

      expect(Array.from(tensor.data as BigInt64Array)).toEqual([9007199254740993n, -9223372036854775807n]);
    });
  });

  describe("BOOL", () => {
    it.each([
      [1, "number 1"],
      [0, "number 0"],
      ["true", 'the string "true"'],
      [null, "null"],
    ])("rejects %j, naming the input and element", (value, described) => {
      const error = decodeError("BOOL", [true, value]);

      expect(error.message).toBe(`input 'x' element 1: expected true or false for BOOL, got ${described}`);
    });
  });

  describe("BYTES", () => {
    it("rejects a number element", () => {
      const error = decodeError("BYTES", ["a", 7]);

      expect(error.message).toBe(
        "input 'x' element 1: expected a string without NUL characters for BYTES, got number 7",
      );
    });

    it("rejects a string containing NUL rather than letting onnxruntime truncate it", () => {
      const error = decodeError("BYTES", ["a", "b\u0000c"]);

      expect(error.message).toMatch(/^input 'x' element 1: expected a string without NUL characters/);
    });

    it("shortens a long offending string in the message", () => {
      const error = decodeError("BYTES", [`${"y".repeat(100)}\u0000`, "a"]);

      expect(error.message).toContain(`got the string "${"y".repeat(32)}…"`);
      expect(error.message.length).toBeLessThan(200);
    });
  });

  describe("floating point datatypes", () => {
    it.each(["FP16", "FP32", "FP64"])('accepts "NaN", "Infinity" and "-Infinity" for %s', (datatype) => {
      const tensor = decode(datatype, ["NaN", "Infinity", "-Infinity", 1], [4]);

      const values =
        datatype === "FP16"
          ? Array.from(tensor.data as Uint16Array, fromFloat16Bits)
          : Array.from(tensor.data as Float32Array);
      expect(values).toEqual([Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 1]);
    });

    it.each(["FP16", "FP32", "FP64"])("rejects a non-numeric string for %s", (datatype) => {
      const error = decodeError(datatype, [1, "1.5"]);

      expect(error.message).toBe(
        `input 'x' element 1: expected a number (or "NaN", "Infinity", "-Infinity") for ${datatype}, got the string "1.5"`,
      );
    });

    it.each(["toString", "constructor", "__proto__", "nan", "inf"])(
      "rejects the string %j, which is neither a number nor a non-finite name",
      (value) => {
        const error = decodeError("FP32", [1, value]);

        expect(error.message).toMatch(/^input 'x' element 1: expected a number/);
      },
    );

    it.each(["FP16", "FP32", "FP64"])("rejects null and booleans for %s", (datatype) => {
      expect(decodeError(datatype, [null, 1]).message).toMatch(/element 0: .* got null$/);
      expect(decodeError(datatype, [1, false]).message).toMatch(/element 1: .* got boolean false$/);
    });

    it("accepts a huge JSON integer (parsed as bigint) for FP64", () => {
      const tensor = decode("FP64", [1, 99999999999999999999n]);

      expect(Array.from(tensor.data as Float64Array)).toEqual([1, 1e20]);
    });

    it("rounds FP16 input to the nearest half-precision value", () => {
      const tensor = decode("FP16", [0.1, 3]);

      expect(Array.from(tensor.data as Uint16Array)).toEqual([0x2e66, 0x4200]);
    });
  });
});

describe("encodeOutput", () => {
  it.each(DATATYPES)("round-trips %s data through decodeInput and encodeOutput", (datatype) => {
    const tensor = decodeInput({ name: "t", datatype, shape: [2, 2], data: SAMPLES[datatype].data });

    const output = encodeOutput(tensor);

    expect(output.name).toBe("t");
    expect(output.datatype).toBe(datatype);
    expect(output.shape).toEqual([2, 2]);
    expect(JSON.stringify(output.data)).toBe(expectedJson(datatype));
  });

  it("round-trips every datatype through the datatype zoo model in onnxruntime", async () => {
    const session = await ort.InferenceSession.create(buildDatatypeZooModel());
    const inputs = DATATYPES.map((datatype) =>
      decodeInput({
        name: `in_${datatype.toLowerCase()}`,
        datatype,
        shape: [2, 2],
        data: SAMPLES[datatype].data,
      }),
    );
    const feeds = Object.fromEntries(
      inputs.map((input) => [
        input.name,
        new ort.Tensor(input.type, input.data as ort.Tensor.DataType, [...input.dims]),
      ]),
    );

    const results = await session.run(feeds);

    for (const datatype of DATATYPES) {
      const name = `out_${datatype.toLowerCase()}`;
      const result = results[name]!;
      const output = encodeOutput({
        name,
        type: result.type as NamedTensor["type"],
        dims: result.dims,
        data: result.data as NamedTensor["data"],
      });
      expect({ datatype: output.datatype, json: JSON.stringify(output.data) }).toEqual({
        datatype,
        json: expectedJson(datatype),
      });
    }
    await session.release();
  });

  it("emits INT64 values within 2^53 as plain JSON numbers", () => {
    const output = encodeOutput({
      name: "y",
      type: "int64",
      dims: [3],
      data: BigInt64Array.of(-9007199254740991n, 0n, 9007199254740991n),
    });

    expect(output.data).toEqual([-9007199254740991, 0, 9007199254740991]);
  });

  it("emits INT64 and UINT64 values beyond 2^53 as their exact digits in JSON", () => {
    const int64 = encodeOutput({
      name: "y",
      type: "int64",
      dims: [2],
      data: BigInt64Array.of(9007199254740993n, -9223372036854775808n),
    });
    const uint64 = encodeOutput({
      name: "z",
      type: "uint64",
      dims: [1],
      data: BigUint64Array.of(18446744073709551615n),
    });

    expect(JSON.stringify({ outputs: [int64, uint64] })).toBe(
      '{"outputs":[{"name":"y","datatype":"INT64","shape":[2],"data":[9007199254740993,-9223372036854775808]},' +
        '{"name":"z","datatype":"UINT64","shape":[1],"data":[18446744073709551615]}]}',
    );
  });

  it("carries an INT64 beyond 2^53 exactly from a JSON request body to a JSON response", () => {
    const body = parseJsonBody('{"data": [9007199254740993, -9007199254740995]}', true) as {
      data: unknown[];
    };
    const tensor = decodeInput({ name: "x", datatype: "INT64", shape: [2], data: body.data });

    const output = encodeOutput(tensor);

    expect(JSON.stringify(output.data)).toBe("[9007199254740993,-9007199254740995]");
  });

  it.each([
    ["float32", Float32Array.of(Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 2)],
    ["float64", Float64Array.of(Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 2)],
    ["float16", Uint16Array.of(0x7e00, 0x7c00, 0xfc00, 0x4000)],
  ] as const)("emits non-finite %s values as the strings clients expect", (type, data) => {
    const output = encodeOutput({ name: "y", type, dims: [4], data });

    expect(output.data).toEqual(["NaN", "Infinity", "-Infinity", 2]);
  });

  it("emits BOOL outputs as JSON booleans", () => {
    const output = encodeOutput({ name: "y", type: "bool", dims: [3], data: Uint8Array.of(0, 1, 2) });

    expect(output.data).toEqual([false, true, true]);
  });

  it("refuses an onnxruntime element type it cannot encode", () => {
    const tensor = {
      name: "y",
      type: "bfloat16",
      dims: [1],
      data: Uint16Array.of(0),
    } as unknown as NamedTensor;

    expect(() => encodeOutput(tensor)).toThrow("output 'y' has unsupported element type bfloat16");
  });
});

describe("hasRoundedIntegers", () => {
  const input = (datatype: string, data: unknown) => ({ name: "x", datatype, shape: [2], data });

  it.each(["INT64", "UINT64"])(
    "spots a %s JSON number beyond 2^53, which JSON.parse has rounded",
    (datatype) => {
      const body = parseJsonBody(`[1, 9007199254740993]`) as unknown[];

      expect(hasRoundedIntegers([input("FP32", [1, 2]), input(datatype, body)])).toBe(true);
    },
  );

  it("spots a rounded integer inside nested data, negative ones included", () => {
    expect(hasRoundedIntegers([input("INT64", [[1], [-(2 ** 53)]])])).toBe(true);
  });

  it("finds nothing when every INT64 number is within 2^53", () => {
    expect(hasRoundedIntegers([input("INT64", [9007199254740991, -9007199254740991])])).toBe(false);
  });

  it("ignores large numbers of float datatypes, exact integers already parsed as bigint, and strings", () => {
    expect(
      hasRoundedIntegers([
        input("FP64", [1e300, 2 ** 60]),
        input("INT64", [9007199254740993n, "9007199254740993"]),
        input("UINT64", "not an array"),
      ]),
    ).toBe(false);
  });
});

describe("float16", () => {
  it.each([
    [1, 0x3c00],
    [-2, 0xc000],
    [0.5, 0x3800],
    [65504, 0x7bff],
    [0, 0x0000],
    [-0, 0x8000],
    [2 ** -14, 0x0400],
    [2 ** -24, 0x0001],
    [3 * 2 ** -24, 0x0003],
    [1023 * 2 ** -24, 0x03ff],
    [Number.POSITIVE_INFINITY, 0x7c00],
    [Number.NEGATIVE_INFINITY, 0xfc00],
  ])("converts %d to the exact half-precision bits %i and back", (value, bits) => {
    expect(toFloat16Bits(value)).toBe(bits);
    expect(Object.is(fromFloat16Bits(bits), value)).toBe(true);
  });

  it.each([
    ["a tie between 1 and its successor rounds down to the even 1", 1 + 2 ** -11, 0x3c00],
    ["a tie between 1+2^-10 and 1+2^-9 rounds up to the even 1+2^-9", 1 + 3 * 2 ** -11, 0x3c02],
    ["just above a tie rounds up", 1 + 2 ** -11 + 2 ** -20, 0x3c01],
    ["a subnormal tie with zero rounds to zero", 2 ** -25, 0x0000],
    ["a subnormal tie between 1 and 2 ulps rounds to 2", 3 * 2 ** -25, 0x0002],
    ["rounding up carries from the mantissa into the exponent", 2 - 2 ** -12, 0x4000],
    ["rounding up carries from the largest subnormal into the smallest normal", 2 ** -14 - 2 ** -26, 0x0400],
  ])("rounds to nearest, ties to even: %s", (_case, value, bits) => {
    expect(toFloat16Bits(value)).toBe(bits);
  });

  it("rounds a double just above a tie up, without rounding through float32 first", () => {
    // 1 + 2^-11 + 2^-40 is above the tie between 0x3c00 and 0x3c01; as float32 it becomes the tie itself.
    expect(toFloat16Bits(1 + 2 ** -11 + 2 ** -40)).toBe(0x3c01);
  });

  it.each([
    [65520, 0x7c00],
    [1e6, 0x7c00],
    [-1e6, 0xfc00],
    [Number.MAX_VALUE, 0x7c00],
  ])("overflows %d to infinity, as a cast does", (value, bits) => {
    expect(toFloat16Bits(value)).toBe(bits);
  });

  it("keeps 65519, just below the overflow threshold, as the largest finite half", () => {
    expect(toFloat16Bits(65519)).toBe(0x7bff);
  });

  it("underflows values below half the smallest subnormal to a signed zero", () => {
    expect(toFloat16Bits(2 ** -26)).toBe(0x0000);
    expect(toFloat16Bits(-(2 ** -26))).toBe(0x8000);
  });

  it("converts NaN to a NaN bit pattern and NaN bit patterns back to NaN", () => {
    const bits = toFloat16Bits(Number.NaN);

    expect(bits & 0x7c00).toBe(0x7c00);
    expect(bits & 0x03ff).not.toBe(0);
    expect(fromFloat16Bits(0x7e00)).toBeNaN();
    expect(fromFloat16Bits(0xfc01)).toBeNaN();
  });

  it("round-trips every non-NaN half-precision bit pattern exactly", () => {
    const mismatches: number[] = [];
    for (let bits = 0; bits <= 0xffff; bits++) {
      const isNaNPattern = (bits & 0x7c00) === 0x7c00 && (bits & 0x03ff) !== 0;
      if (!isNaNPattern && toFloat16Bits(fromFloat16Bits(bits)) !== bits) mismatches.push(bits);
    }

    expect(mismatches).toEqual([]);
  });
});
