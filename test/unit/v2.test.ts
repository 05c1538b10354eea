import { describe, expect, it } from "vitest";
import * as z from "zod";
import { InvalidRequestError } from "#core/errors.ts";
import { parseInferRequest, parseJsonBody, plainInferRequest } from "#core/v2/parse.ts";
import { describeZodError, inferRequestSchema } from "#core/v2/wire.ts";
import { thrownBy } from "../support/rejection.ts";

function requestError(body: unknown): InvalidRequestError {
  return thrownBy(() => parseInferRequest(body), InvalidRequestError);
}

const validInput = { name: "features", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, 4] };

describe("parseJsonBody", () => {
  it("parses plain JSON by default, where integers beyond 2^53 are rounded as JSON.parse does", () => {
    const body = parseJsonBody(
      '{"inputs": [{"name": "x", "data": [1, 2.5, true, null, "s", 9007199254740993]}]}',
    );

    expect(body).toEqual({ inputs: [{ name: "x", data: [1, 2.5, true, null, "s", 9007199254740992] }] });
  });

  it("keeps integers beyond 2^53 exact as bigint when asked for exact integers", () => {
    const body = parseJsonBody('{"data": [9007199254740993, -9223372036854775808]}', true) as {
      data: unknown[];
    };

    expect(body.data).toEqual([9007199254740993n, -9223372036854775808n]);
  });

  it("leaves ordinary numbers as numbers when asked for exact integers", () => {
    const body = parseJsonBody("[1, 2.5, -0.125, 1234567890123456, 9007199254740993, 1e300]", true);

    expect(body).toEqual([1, 2.5, -0.125, 1234567890123456, 9007199254740993n, 1e300]);
  });

  it("leaves a number with a long fraction or an exponent as a number when asked for exact integers", () => {
    const body = parseJsonBody("[0.12345678901234567890, 12345678901234567890e0]", true);

    expect(body).toEqual([0.12345678901234568, 12345678901234567000]);
  });

  it("leaves a long run of digits inside a string as a string when asked for exact integers", () => {
    const body = parseJsonBody('{"id": "12345678901234567890"}', true);

    expect(body).toEqual({ id: "12345678901234567890" });
  });

  it.each([false, true])("rejects non-JSON bodies with a 400 (exact integers: %s)", (exactIntegers) => {
    for (const text of ["", "{", "not json", "{'a': 1}", "[1, 2,]", "[12345678901234567890,]"]) {
      let caught: unknown;
      try {
        parseJsonBody(text, exactIntegers);
      } catch (error) {
        caught = error;
      }

      expect(caught, text).toBeInstanceOf(InvalidRequestError);
      expect((caught as InvalidRequestError).status).toBe(400);
      expect((caught as InvalidRequestError).message).toMatch(/^request body is not valid JSON: /);
    }
  });
});

describe("parseInferRequest", () => {
  it("accepts a minimal request and passes the data through untouched", () => {
    const data = [[1n, 2], "x"];

    const request = parseInferRequest({ inputs: [{ ...validInput, data }] });

    expect(request.inputs[0]!.data).toBe(data);
    expect(request.outputs).toBeUndefined();
  });

  it("keeps the id, parameters and requested outputs", () => {
    const request = parseInferRequest({
      id: "req-1",
      parameters: { priority: 1 },
      inputs: [validInput],
      outputs: [{ name: "label" }],
    });

    expect(request.id).toBe("req-1");
    expect(request.parameters).toEqual({ priority: 1 });
    expect(request.outputs).toEqual([{ name: "label" }]);
  });

  it("names the field path of a negative dimension", () => {
    const error = requestError({ inputs: [{ ...validInput, shape: [1, -4] }] });

    expect(error.message).toMatch(/^inputs\[0\]\.shape\[1\]: /);
  });

  it("names the field path of a shape that is not an array", () => {
    const error = requestError({ inputs: [validInput, { ...validInput, shape: "1x4" }] });

    expect(error.message).toMatch(/^inputs\[1\]\.shape: /);
  });

  it("names the field path of a fractional dimension", () => {
    const error = requestError({ inputs: [{ ...validInput, shape: [1.5] }] });

    expect(error.message).toMatch(/^inputs\[0\]\.shape\[0\]: /);
  });

  it("names the field path of a missing datatype", () => {
    const { datatype: _omitted, ...withoutDatatype } = validInput;

    const error = requestError({ inputs: [withoutDatatype] });

    expect(error.message).toMatch(/^inputs\[0\]\.datatype: /);
  });

  it("names the field path of an empty input name", () => {
    const error = requestError({ inputs: [{ ...validInput, name: "" }] });

    expect(error.message).toMatch(/^inputs\[0\]\.name: /);
  });

  it("names the field path of a requested output without a name", () => {
    const error = requestError({ inputs: [validInput], outputs: [{ name: "label" }, {}] });

    expect(error.message).toMatch(/^outputs\[1\]\.name: /);
  });

  it("rejects a request without inputs, naming the field", () => {
    expect(requestError({}).message).toMatch(/^inputs: /);
    expect(requestError({ inputs: [] }).message).toMatch(/^inputs: /);
  });

  it("rejects an id that is not a string, naming the field", () => {
    const error = requestError({ id: 7, inputs: [validInput] });

    expect(error.message).toMatch(/^id: /);
  });

  it("rejects a body that is not an object with a message and no path", () => {
    const error = requestError([validInput]);

    expect(error.status).toBe(400);
    expect(error.message).not.toMatch(/^[\w[\].]+: /);
    expect(error.message.length).toBeGreaterThan(0);
  });
});

describe("plainInferRequest (the fast path's hand check)", () => {
  const input = { name: "x", shape: [1, 2], datatype: "FP32", data: 0 };
  const documents: unknown[] = [
    { inputs: [input] },
    {
      id: "r1",
      parameters: { priority: 1 },
      inputs: [
        { ...input, parameters: { binary_data_size: 8 }, extra: true },
        { ...input, name: "y" },
      ],
      outputs: [{ name: "o" }, { name: "p", parameters: { binary_data: false }, extra: 1 }],
      unknown: "dropped",
    },
    { inputs: [{ ...input, shape: [] }], outputs: [] },
    { inputs: [{ ...input, data: null }] },
    // Each of these the schema rejects.
    { inputs: [{ name: "x", shape: [1], datatype: "FP32" }] },
    { inputs: [{ ...input, shape: [1.5] }] },
    { inputs: [{ ...input, shape: [-1] }] },
    { inputs: [{ ...input, shape: [2 ** 60] }] },
    { inputs: [{ ...input, shape: "1,2" }] },
    { inputs: [{ ...input, name: "" }] },
    { inputs: [{ ...input, datatype: 7 }] },
    { inputs: [{ ...input, parameters: [1] }] },
    { inputs: [] },
    { inputs: {} },
    { id: 3, inputs: [input] },
    { parameters: null, inputs: [input] },
    { inputs: [input], outputs: {} },
    { inputs: [input], outputs: [{ name: "" }] },
    { inputs: [input], outputs: [{ name: "o", parameters: "x" }] },
    [input],
    null,
    // The schema drops an own __proto__ key from records: left to it.
    JSON.parse(
      '{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":0,"parameters":{"__proto__":5}}]}',
    ),
  ];

  it("gives the schema's result wherever it answers, and leaves every rejected document to the schema", () => {
    let answered = 0;
    for (const document of documents) {
      const schema = inferRequestSchema.safeParse(document);
      const plain = plainInferRequest(document);
      if (!schema.success) {
        expect(plain, JSON.stringify(document)).toBeUndefined();
        continue;
      }
      if (plain === undefined) continue;
      answered++;
      expect(plain, JSON.stringify(document)).toStrictEqual(schema.data);
    }
    expect(answered).toBe(4);
  });
});

describe("describeZodError", () => {
  it("says 'invalid request' for an error without issues", () => {
    expect(describeZodError(new z.ZodError([]))).toBe("invalid request");
  });
});
