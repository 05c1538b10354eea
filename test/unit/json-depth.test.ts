import { describe, expect, it } from "vitest";
import { InvalidRequestError } from "#core/errors.ts";
import { MAX_JSON_DEPTH, nestsDeeperThan, parseInferRequestBody, parseJsonBody } from "#core/v2/parse.ts";

const nestedArrays = (depth: number) => `${"[".repeat(depth)}1${"]".repeat(depth)}`;
const nestedObjects = (depth: number) => `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`;

function refusal(body: string): Error {
  try {
    parseJsonBody(body);
  } catch (error) {
    return error as Error;
  }
  throw new Error("the body was accepted");
}

describe("refusing deeply nested JSON before JSON.parse", () => {
  it("accepts arrays and objects nested exactly to the limit", () => {
    expect(parseJsonBody(nestedArrays(MAX_JSON_DEPTH))).toBeInstanceOf(Array);
    expect(parseJsonBody(nestedObjects(MAX_JSON_DEPTH))).toBeInstanceOf(Object);
  });

  it.each([
    ["arrays", nestedArrays(MAX_JSON_DEPTH + 1)],
    ["objects", nestedObjects(MAX_JSON_DEPTH + 1)],
    ["arrays and objects", `${'[{"a":'.repeat(33)}1${"}]".repeat(33)}`],
  ])("refuses %s one level past the limit with a 400 naming it", (_kind, body) => {
    const error = refusal(body);

    expect(error).toBeInstanceOf(InvalidRequestError);
    expect(error.message).toContain(`more than ${MAX_JSON_DEPTH} deep`);
  });

  it("does not count brackets inside strings, escaped quotes included", () => {
    const brackets = "[".repeat(1000);
    const body = JSON.stringify({ id: `${brackets}\\"${brackets}`, note: `"${"{".repeat(500)}` });

    expect(nestsDeeperThan(body, 1)).toBe(false);
    expect(parseJsonBody(body)).toEqual(JSON.parse(body));
  });

  it("counts a bracket that follows an escaped backslash at a string's end", () => {
    expect(nestsDeeperThan('["a\\\\",[[1]]]', 2)).toBe(true);
    expect(nestsDeeperThan('["a\\\\",[[1]]]', 3)).toBe(false);
  });

  it("leaves unbalanced and unterminated text to JSON.parse's message", () => {
    expect(refusal("]]]][[[[").message).toMatch(/^request body is not valid JSON/);
    expect(refusal('["unterminated [[[[').message).toMatch(/^request body is not valid JSON/);
  });

  it("accepts V2 data of rank 32 sent as nested lists", () => {
    const body = JSON.stringify({
      inputs: [{ name: "x", shape: Array(32).fill(1), datatype: "FP32", data: JSON.parse(nestedArrays(32)) }],
    });

    expect(parseInferRequestBody(body).inputs[0]?.shape).toHaveLength(32);
  });

  it("refuses a 10 MB infer body nested 5 million deep before JSON.parse reads it", () => {
    const body = `${"[".repeat(5_000_000)}${"]".repeat(5_000_000)}`;

    expect(() => parseInferRequestBody(body)).toThrow(`more than ${MAX_JSON_DEPTH} deep`);
  });

  it("refuses deep nesting inside an infer request's data", () => {
    const body = `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":${nestedArrays(200)}}]}`;

    expect(() => parseInferRequestBody(body)).toThrow(InvalidRequestError);
    expect(() => parseInferRequestBody(body)).toThrow(`more than ${MAX_JSON_DEPTH} deep`);
  });
});
