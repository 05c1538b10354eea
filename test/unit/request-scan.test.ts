import { describe, expect, it } from "vitest";
import { mulberry32 } from "#core/tensor/seeded-random.ts";
import { parseInferRequestBody, plainInferRequest } from "#core/v2/parse.ts";
import { bodyBytes, floatsFor, readPlainFloat32Request } from "#core/v2/request-scan.ts";
import { decodeInput } from "#core/v2/tensor-codec.ts";
import { generalPath, row } from "../support/fp32-requests.ts";

function readPlain(body: string) {
  const bytes = bodyBytes(body);
  if (bytes === undefined) throw new Error("not ASCII");
  return readPlainFloat32Request(body, bytes, floatsFor(body.length));
}

/** What JSON.parse and the request checks make of the body, FP32 data as Float32Arrays. */
function reference(body: string) {
  const request = plainInferRequest(JSON.parse(body));
  if (request === undefined) throw new Error("not a plain request");
  return {
    ...request,
    inputs: request.inputs.map((input) => ({ ...input, data: Float32Array.from(input.data as number[]) })),
  };
}

const input = (extra: Record<string, unknown> = {}) => ({
  name: "x",
  shape: [2, 300],
  datatype: "FP32",
  data: row(600, 21),
  ...extra,
});

describe("readPlainFloat32Request", () => {
  it.each([
    ["inputs alone", JSON.stringify({ inputs: [input()] })],
    [
      "an id and outputs",
      JSON.stringify({ id: "r-1", inputs: [input()], outputs: [{ name: "y" }, { name: "z" }] }),
    ],
    [
      "keys in another order",
      JSON.stringify({
        outputs: [{ name: "y" }],
        inputs: [{ data: row(300, 2), datatype: "FP32", shape: [300], name: "a" }],
        id: "",
      }),
    ],
    [
      "two inputs",
      JSON.stringify({ inputs: [input(), input({ name: "w", shape: [3], data: [1, 2.5, -3] })] }),
    ],
    [
      "a scalar's empty shape",
      JSON.stringify({ inputs: [input(), input({ name: "s", shape: [], data: [4] })] }),
    ],
    [
      "any spacing",
      `\n{ "inputs" :\t[ { "name" : "x" ,"shape":[ 2 , 300 ] , "datatype" : "FP32" , "data" : [ ${row(600, 3).join(" , ")} ] } ] , "id" : "a b" }\r\n`,
    ],
  ])("reads %s as JSON.parse and the request checks do", (_, body) => {
    const plain = readPlain(body);
    expect(plain).toBeDefined();
    expect(plain).toEqual(reference(body));
    expect({ ...plain, inputs: plain!.inputs.map(decodeInput) }).toEqual(generalPath(body));
  });

  it.each([
    ["request parameters", { parameters: { a: 1 }, inputs: [input()] }],
    ["input parameters", { inputs: [input({ parameters: {} })] }],
    [
      "output parameters",
      { inputs: [input()], outputs: [{ name: "y", parameters: { binary_data: false } }] },
    ],
    ["an unknown key", { inputs: [input()], priority: 1 }],
    ["a numeric id", { id: 5, inputs: [input()] }],
    ["an INT64 input", { inputs: [input({ datatype: "INT64", data: row(600, 4).map(Math.round) })] }],
    ["an empty name", { inputs: [input({ name: "" })] }],
    ["a negative dimension", { inputs: [input({ shape: [-600] })] }],
    ["a fractional dimension", { inputs: [input({ shape: [600.5] })] }],
    ["a huge dimension", { inputs: [input({ shape: [1e20, 0] })] }],
    ["too few elements", { inputs: [input({ shape: [601] })] }],
    ["nested data", { inputs: [input({ data: [row(300, 5), row(300, 6)] })] }],
    ["no inputs", { inputs: [], id: "x".repeat(2000) }],
    ["an escape", { id: 'say "hi"', inputs: [input()] }],
  ])(
    "leaves a request with %s to the general scan, which answers as the general path does",
    (_, document) => {
      const body = JSON.stringify(document);
      expect(readPlain(body)).toBeUndefined();
      let expected: unknown;
      let actual: unknown;
      try {
        expected = generalPath(body);
      } catch (error) {
        expected = (error as Error).message;
      }
      try {
        const fast = parseInferRequestBody(body);
        actual = { ...fast, inputs: fast.inputs.map(decodeInput) };
      } catch (error) {
        actual = (error as Error).message;
      }
      expect(actual).toEqual(expected);
    },
  );

  it.each([
    ["an id given twice", `{"id":"a","id":"b","inputs":[${JSON.stringify(input())}]}`],
    [
      "a dimension written with an exponent",
      JSON.stringify({ inputs: [input()] }).replace('"shape":[2,300]', '"shape":[2,3e2]'),
    ],
    [
      "a dimension with a leading zero",
      JSON.stringify({ inputs: [input()] }).replace('"shape":[2,300]', '"shape":[02,300]'),
    ],
    ["text after the document", `${JSON.stringify({ inputs: [input()] })} x`],
    ["a missing comma", JSON.stringify({ inputs: [input()] }).replace('"name":"x",', '"name":"x" ')],
  ])("gives up on %s", (_, body) => {
    expect(readPlain(body)).toBeUndefined();
  });

  it("agrees with the general path, result or error message, on thousands of damaged bodies", () => {
    const next = mulberry32(99);
    const bases = [
      () => JSON.stringify({ inputs: [input({ data: row(600, Math.floor(next() * 1e6)) })] }),
      () => JSON.stringify({ id: "r1", inputs: [input({ shape: [600] })], outputs: [{ name: "y" }] }),
      () =>
        JSON.stringify({
          inputs: [
            { data: row(300, 3), shape: [300], datatype: "FP32", name: "x" },
            { name: "m", shape: [2], datatype: "BOOL", data: [true, false] },
          ],
        }),
    ];
    const junk = ['"', "\\", "[", "]", "{", "}", ",", ":", " ", "0", "-", ".", "e", "1", "\u0122", "é", "n"];
    const outcome = (parse: () => unknown) => {
      try {
        return { request: parse() };
      } catch (error) {
        return { error: (error as Error).message };
      }
    };
    const fastPath = (body: string) => {
      const request = parseInferRequestBody(body);
      return { ...request, inputs: request.inputs.map(decodeInput) };
    };
    for (let i = 0; i < 3000; i++) {
      const body = bases[i % bases.length]!();
      // Never empty: an empty body has its own message, before either path.
      const at = 1 + Math.floor(next() * (body.length - 1));
      const insert = junk[Math.floor(next() * junk.length)]!;
      const damaged = [
        body.slice(0, at),
        body.slice(0, at) + insert + body.slice(at),
        body.slice(0, at) + body.slice(at + 1 + Math.floor(next() * 5)),
        body.slice(0, at) + insert + body.slice(at + 1),
      ][i % 4]!;
      expect(outcome(() => fastPath(damaged))).toEqual(outcome(() => generalPath(damaged)));
    }
  });
});
