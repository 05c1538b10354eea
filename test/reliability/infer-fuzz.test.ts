/**
 * A bounded fuzz of the infer route through the local stack: a fixed set of crafted and seeded-random
 * requests (malformed and truncated JSON, deep nesting, huge shapes, wrong datatypes, invalid UTF-8, odd
 * content types, path tricks, unknown and duplicate fields). None may answer 5xx; a refusal is a 4xx
 * whose body is a JSON error; no body may show a path, a source location, a stack line or node_modules.
 */
import { type IncomingHttpHeaders, request } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mulberry32 } from "#core/tensor/seeded-random.ts";
import type { LocalStack } from "../../local/stack.ts";
import { buildDatatypeModel } from "../../models/compat.ts";
import { startTestStack, stopTestStack, TEST_API_KEY } from "../support/local-stack.ts";

/** `refused`: a 4xx with a JSON error. `any`: a valid request in disguise, which may also be served. */
type Expectation = "refused" | "any";

interface FuzzCase {
  readonly label: string;
  readonly path: string;
  readonly body?: string | Buffer;
  readonly method?: string;
  /** null sends none. @default "application/json" */
  readonly contentType?: string | null;
  /** Sent without a content-length, in chunks. */
  readonly chunked?: boolean;
  readonly expect: Expectation;
}

interface Answer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly text: string;
}

const IRIS = "/v2/models/iris/infer";
const BYTES_MODEL = "identity_bytes";
const INT64_MODEL = "identity_int64";
const BYTES = `/v2/models/${BYTES_MODEL}/infer`;
const INT64 = `/v2/models/${INT64_MODEL}/infer`;
/** Paths a URL parser may resolve a trick to, where a valid iris body is served. */
const IRIS_INFER_PATHS = new Set([IRIS, "/v2/models/iris/versions/1/infer"]);

let stack: LocalStack;
let dataDir: string;

beforeAll(async () => {
  ({ stack, dataDir } = await startTestStack("infer-fuzz"));
  for (const [name, bytes] of [
    [BYTES_MODEL, buildDatatypeModel("BYTES")],
    [INT64_MODEL, buildDatatypeModel("INT64")],
  ] as const) {
    const record = await stack.publish(name, 1, bytes);
    if (record.status !== "ready" && record.status !== "optimizing")
      throw new Error(`${name} did not register: ${JSON.stringify(record)}`);
  }
});

afterAll(() => stopTestStack(stack, dataDir));

/** One request over a fresh loopback connection, the path sent exactly as written (no URL normalization). */
function send(fuzz: Pick<FuzzCase, "path" | "body" | "method" | "contentType" | "chunked">): Promise<Answer> {
  const { hostname, port } = new URL(stack.url);
  const body = typeof fuzz.body === "string" ? Buffer.from(fuzz.body, "utf8") : fuzz.body;
  const headers: Record<string, string | number> = { "x-api-key": TEST_API_KEY };
  if (fuzz.contentType !== null) headers["content-type"] = fuzz.contentType ?? "application/json";
  if (body !== undefined && !fuzz.chunked) headers["content-length"] = body.length;
  return new Promise((resolve, reject) => {
    const sent = request(
      { host: hostname, port, method: fuzz.method ?? "POST", path: fuzz.path, headers, agent: false },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("error", reject);
        response.on("end", () =>
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            text: Buffer.concat(chunks).toString("utf8"),
          }),
        );
      },
    );
    sent.on("error", reject);
    if (body !== undefined && fuzz.chunked) {
      const chunk = 1 << 20;
      for (let at = 0; at < body.length; at += chunk) sent.write(body.subarray(at, at + chunk));
    }
    sent.end(fuzz.chunked ? undefined : body);
  });
}

const INTERNALS: readonly (readonly [RegExp, string])[] = [
  // Two or more segments from the root, except the service's own routes (`no route for POST /v2/x`).
  [
    /(?<![\w.~:/\\-])\/(?!(?:v2|models|admin|invocations|ping)(?:\/|\b))[\w.@+~-]+\/[\w.@+~-]/,
    "an absolute file path",
  ],
  [/\b[\w-]+\.(?:ts|mts|cts|js|mjs|cjs|cc|cpp|cxx|h|hpp)\b/, "a source file"],
  [/(?:^|\n)\s*at \S/, "a stack line"],
  [/node_modules/, "node_modules"],
];

/** What is wrong with an answer to a fuzzed request; empty when nothing is. */
function problemsWith(fuzz: FuzzCase, answer: Answer): string[] {
  const problems: string[] = [];
  if (answer.status >= 500) problems.push(`answered ${answer.status}`);
  if (fuzz.expect === "refused" && (answer.status < 400 || answer.status >= 500))
    problems.push(`answered ${answer.status} where a 4xx was due`);
  let shown = answer.text;
  if (answer.status >= 400) {
    // The function answers {"error"}; the gateway's own refusals are API Gateway's {"message"}.
    const key = answer.headers["x-amzn-errortype"] === undefined ? "error" : "message";
    let parsed: unknown;
    try {
      parsed = JSON.parse(answer.text);
    } catch {
      problems.push("the error body is not JSON");
    }
    const message = (parsed as Record<string, unknown> | undefined)?.[key];
    if (typeof message !== "string" || message.length === 0)
      problems.push(`the error body has no "${key}" string`);
    else shown = message;
  }
  for (const text of new Set([answer.text, shown])) {
    for (const [pattern, what] of INTERNALS) if (pattern.test(text)) problems.push(`the body shows ${what}`);
    if (text.includes(dataDir) || text.includes(process.cwd())) problems.push("the body shows a local path");
  }
  return [...new Set(problems)];
}

/** Sends each case in turn; the violations, each with its request and the answer, for one assertion. */
async function violationsOf(cases: readonly FuzzCase[]): Promise<string[]> {
  const violations: string[] = [];
  for (const fuzz of cases) {
    const answer = await send(fuzz).catch((error: Error) => error);
    if (answer instanceof Error) {
      violations.push(`${fuzz.label}: the connection failed (${answer.message})`);
      continue;
    }
    const problems = problemsWith(fuzz, answer);
    if (problems.length > 0)
      violations.push(
        `${fuzz.label}: ${problems.join("; ")} -> ${answer.status} ${answer.text.slice(0, 300)}`,
      );
  }
  return violations;
}

// Request builders.

function irisBody(rows: number, random = mulberry32(rows)): string {
  const data = Array.from({ length: rows * 4 }, () => Math.round(random() * 800) / 100);
  return JSON.stringify({ inputs: [{ name: "features", shape: [rows, 4], datatype: "FP32", data }] });
}

function irisInput(fields: Record<string, unknown>): string {
  return JSON.stringify({
    inputs: [{ name: "features", shape: [1, 4], datatype: "FP32", data: [5.1, 3.5, 1.4, 0.2], ...fields }],
  });
}

function bytesBody(data: unknown[], shape: unknown[] = [data.length / 3, 3]): string {
  return JSON.stringify({ inputs: [{ name: "x", shape, datatype: "BYTES", data }] });
}

/** A body whose text is assembled by hand: `raw` is spliced in where JSON.stringify cannot write it. */
function irisWithRaw(field: "shape" | "data", raw: string): string {
  const other = field === "shape" ? '"data":[5.1,3.5,1.4,0.2]' : '"shape":[1,4]';
  return `{"inputs":[{"name":"features","datatype":"FP32",${other},"${field}":${raw}}]}`;
}

const pick = <T>(random: () => number, items: readonly T[]): T =>
  items[Math.floor(random() * items.length)] as T;
const between = (random: () => number, low: number, high: number) =>
  low + Math.floor(random() * (high - low + 1));

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/** Valid bodies to break, small and past the fast FP32 reader's 1024-character threshold. */
function validBodies(): { path: string; body: string }[] {
  return [
    { path: IRIS, body: irisBody(1) },
    { path: IRIS, body: irisBody(64) },
    { path: BYTES, body: bytesBody(["hello", "", "ünïcødé ✓"]) },
    {
      path: INT64,
      body: JSON.stringify({ inputs: [{ name: "x", shape: [1, 3], datatype: "INT64", data: [1, 2, 3] }] }),
    },
  ];
}

function malformedJsonCases(): FuzzCase[] {
  const random = mulberry32(1601);
  const fixed: [string, string][] = [
    ["empty body", ""],
    ["lone brace", "{"],
    ["closing brace", "}"],
    ["key without value", '{"inputs":'],
    ["single quotes", "{'inputs': []}"],
    ["hole in array", '{"inputs":[,]}'],
    ["trailing comma", `${irisBody(1).slice(0, -2)},]}`],
    ["NaN literal", irisWithRaw("data", "[NaN,1,2,3]")],
    ["Infinity literal", irisWithRaw("data", "[Infinity,1,2,3]")],
    ["comment", `// iris\n${irisBody(1)}`],
    ["byte order mark", `\uFEFF${irisBody(1)}`],
    ["two documents", `${irisBody(1)}${irisBody(1)}`],
    ["unterminated string", '{"inputs":[{"name":"features'],
    ["bad escape", '{"inputs":[{"name":"\\x41"}]}'],
    [
      "raw control character in string",
      '{"inputs":[{"name":"feat\u0001ures","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}',
    ],
    ["hex number", irisWithRaw("data", "[0x10,1,2,3]")],
    ["leading zeros", irisWithRaw("data", "[01,1,2,3]")],
    ["plus sign", irisWithRaw("data", "[+1,1,2,3]")],
    ["bare word", "inputs"],
    ["undefined", "undefined"],
  ];
  const cases: FuzzCase[] = fixed.map(([label, body]) => ({
    label: `malformed JSON: ${label}`,
    path: IRIS,
    body,
    expect: "refused",
  }));
  const breakers = ["{", "}", "[", "]", '"', ":", ",", "\\", "x", " ", "0", "-", ".", "e", "'"];
  const sources = validBodies();
  while (cases.length < 70) {
    const source = pick(random, sources);
    let text = source.body;
    for (let edits = between(random, 1, 3); edits > 0; edits--) {
      const at = between(random, 0, text.length - 1);
      const edit = between(random, 0, 2);
      const char = pick(random, breakers);
      text =
        edit === 0
          ? text.slice(0, at) + char + text.slice(at + 1)
          : edit === 1
            ? text.slice(0, at) + text.slice(at + 1)
            : text.slice(0, at) + char + text.slice(at);
    }
    if (isJson(text)) continue;
    cases.push({
      label: `malformed JSON: edited ${source.path} #${cases.length}`,
      path: source.path,
      body: text,
      expect: "refused",
    });
  }
  return cases;
}

function truncatedJsonCases(): FuzzCase[] {
  const random = mulberry32(1602);
  const sources = validBodies();
  const cases: FuzzCase[] = [];
  while (cases.length < 50) {
    const source = pick(random, sources);
    const text = source.body.slice(0, between(random, 1, source.body.length - 1));
    if (isJson(text)) continue;
    cases.push({
      label: `truncated at ${text.length} of ${source.path}`,
      path: source.path,
      body: text,
      expect: "refused",
    });
  }
  return cases;
}

function nestingCases(): FuzzCase[] {
  const random = mulberry32(1603);
  const arrays = (depth: number, closed: boolean) =>
    "[".repeat(depth) + (closed ? `1${"]".repeat(depth)}` : "");
  const objects = (depth: number, closed: boolean) =>
    '{"a":'.repeat(depth) + (closed ? `1${"}".repeat(depth)}` : "");
  const cases: FuzzCase[] = [
    { label: "arrays 65 deep, unclosed", path: IRIS, body: arrays(65, false), expect: "refused" },
    { label: "arrays 100 deep, closed", path: IRIS, body: arrays(100, true), expect: "refused" },
    { label: "objects 1000 deep, closed", path: IRIS, body: objects(1000, true), expect: "refused" },
    { label: "arrays 5000 deep", path: IRIS, body: arrays(5000, false), expect: "refused" },
    { label: "arrays 100000 deep, closed", path: IRIS, body: arrays(100_000, true), expect: "refused" },
    { label: "objects 200000 deep", path: IRIS, body: objects(200_000, false), expect: "refused" },
    {
      label: "data nested 70 deep",
      path: IRIS,
      body: irisWithRaw("data", arrays(70, true)),
      expect: "refused",
    },
    {
      label: "data nested 60 deep (under the limit, not the shape)",
      path: IRIS,
      body: irisWithRaw("data", `${"[".repeat(59)}[5.1,3.5,1.4,0.2]${"]".repeat(59)}`),
      expect: "refused",
    },
    {
      label: "parameters nested 500 deep",
      path: IRIS,
      body: `{"parameters":${objects(500, true)},${irisBody(1).slice(1)}`,
      expect: "refused",
    },
    {
      label: "BYTES data nested 100000 deep",
      path: BYTES,
      body: `{"inputs":[{"name":"x","shape":[1,3],"datatype":"BYTES","data":${arrays(100_000, true)}}]}`,
      expect: "refused",
    },
    { label: "3 MB of '[' (3 million deep)", path: IRIS, body: "[".repeat(3_000_000), expect: "refused" },
    {
      label: "3 MB of '{\"a\":' (600000 deep)",
      path: IRIS,
      body: objects(600_000, false),
      expect: "refused",
    },
    // Past Lambda's 6 MB payload: the gateway refuses these, by content-length and by the bytes read.
    { label: "10 MB of '[' (10 million deep)", path: IRIS, body: "[".repeat(10_000_000), expect: "refused" },
    {
      label: "10 MB of '[' (10 million deep), chunked",
      path: IRIS,
      body: "[".repeat(10_000_000),
      chunked: true,
      expect: "refused",
    },
  ];
  for (let n = 0; n < 20; n++) {
    const depth = between(random, 65, 300_000);
    let body = "";
    for (let level = 0; level < depth; level++) body += random() < 0.5 ? "[" : '{"k":';
    cases.push({
      label: `random nesting ${depth} deep`,
      path: pick(random, [IRIS, BYTES, INT64]),
      body,
      expect: "refused",
    });
  }
  return cases;
}

function shapeCases(): FuzzCase[] {
  const random = mulberry32(1604);
  const huge = [
    "1e12",
    "-1",
    "-4",
    "1.5",
    '"NaN"',
    '"1"',
    "null",
    "1e308",
    "1e400",
    "9007199254740992",
    "9007199254740994",
    "4294967297",
    "18446744073709551617",
    "-0.5",
    "true",
    "[1]",
    "{}",
    "1e-7",
    "99999999999999999999999999",
  ];
  const cases: FuzzCase[] = [
    { label: "shape [1e12, 4]", path: IRIS, body: irisInput({ shape: [1e12, 4] }), expect: "refused" },
    { label: "shape [1e12, 1e12]", path: IRIS, body: irisInput({ shape: [1e12, 1e12] }), expect: "refused" },
    { label: "shape [-1, 4]", path: IRIS, body: irisInput({ shape: [-1, 4] }), expect: "refused" },
    { label: "shape [0.5, 8]", path: IRIS, body: irisInput({ shape: [0.5, 8] }), expect: "refused" },
    { label: "shape ['NaN', 4]", path: IRIS, body: irisInput({ shape: ["NaN", 4] }), expect: "refused" },
    {
      label: "shape [2^32, 2^32]",
      path: IRIS,
      body: irisInput({ shape: [2 ** 32, 2 ** 32] }),
      expect: "refused",
    },
    { label: "shape [2^53, 4]", path: IRIS, body: irisInput({ shape: [2 ** 53, 4] }), expect: "refused" },
    { label: "shape of rank 0", path: IRIS, body: irisInput({ shape: [] }), expect: "refused" },
    {
      label: "shape of rank 40",
      path: IRIS,
      body: irisInput({ shape: Array(40).fill(2) }),
      expect: "refused",
    },
    {
      label: "shape of rank 1000",
      path: IRIS,
      body: irisInput({ shape: Array(1000).fill(1) }),
      expect: "refused",
    },
    { label: "shape as a string", path: IRIS, body: irisInput({ shape: "1,4" }), expect: "refused" },
    {
      label: "shape as an object",
      path: IRIS,
      body: irisInput({ shape: { 0: 1, 1: 4 } }),
      expect: "refused",
    },
    { label: "shape missing", path: IRIS, body: irisInput({ shape: undefined }), expect: "refused" },
    { label: "an empty batch", path: IRIS, body: irisInput({ shape: [0, 4], data: [] }), expect: "any" },
    {
      label: "BYTES shape [1e12, 3]",
      path: BYTES,
      body: bytesBody(["a", "b", "c"], [1e12, 3]),
      expect: "refused",
    },
    {
      label: "BYTES shape [-1, 3]",
      path: BYTES,
      body: bytesBody(["a", "b", "c"], [-1, 3]),
      expect: "refused",
    },
    {
      label: "INT64 shape [1e9, 3]",
      path: INT64,
      body: JSON.stringify({ inputs: [{ name: "x", shape: [1e9, 3], datatype: "INT64", data: [1, 2, 3] }] }),
      expect: "refused",
    },
  ];
  for (const raw of huge) {
    cases.push({
      label: `shape [${raw}, 4]`,
      path: IRIS,
      body: irisWithRaw("shape", `[${raw},4]`),
      expect: "refused",
    });
  }
  while (cases.length < 60) {
    const rank = between(random, 1, 4);
    const dims = Array.from({ length: rank }, () => pick(random, [...huge, "4", "1", "0"]));
    if (dims.every((dim) => dim === "1" || dim === "4")) continue;
    cases.push({
      label: `random shape [${dims}]`,
      path: IRIS,
      body: irisWithRaw("shape", `[${dims}]`),
      expect: "refused",
    });
  }
  return cases;
}

function lengthMismatchCases(): FuzzCase[] {
  const random = mulberry32(1605);
  const cases: FuzzCase[] = [];
  while (cases.length < 24) {
    const rows = between(random, 1, 8);
    const length = between(random, 0, 40);
    if (length === rows * 4) continue;
    const data = Array.from({ length }, () => random());
    if (cases.length % 3 === 2) {
      cases.push({
        label: `BYTES shape [${rows}, 3] with ${length} strings`,
        path: BYTES,
        body: bytesBody(data.map(String), [rows, 3]),
        expect: length === rows * 3 ? "any" : "refused",
      });
    } else {
      cases.push({
        label: `shape [${rows}, 4] with ${length} values`,
        path: IRIS,
        body: irisInput({ shape: [rows, 4], data }),
        expect: "refused",
      });
    }
  }
  cases.push({ label: "data missing", path: IRIS, body: irisInput({ data: undefined }), expect: "refused" });
  cases.push({ label: "data as a number", path: IRIS, body: irisInput({ data: 5 }), expect: "refused" });
  cases.push({
    label: "data as an object",
    path: IRIS,
    body: irisInput({ data: { 0: 1 } }),
    expect: "refused",
  });
  cases.push({ label: "data null", path: IRIS, body: irisInput({ data: null }), expect: "refused" });
  return cases;
}

function datatypeCases(): FuzzCase[] {
  const cases: FuzzCase[] = [];
  for (const datatype of ["INT64", "BYTES", "FP16", "BOOL", "FP64", "INT8", "UINT64", "INT32"]) {
    cases.push({
      label: `iris features as ${datatype}`,
      path: IRIS,
      body: irisInput({ datatype }),
      expect: "refused",
    });
  }
  const unknown: unknown[] = [
    "FP8",
    "COMPLEX64",
    "INT4",
    "STRING",
    "TENSOR",
    "fp32",
    "Float32",
    "",
    " FP32",
    "FP32\u0000",
    "FP32".repeat(1000),
    32,
    null,
    ["FP32"],
    { type: "FP32" },
    true,
  ];
  for (const datatype of unknown) {
    cases.push({
      label: `iris features as ${JSON.stringify(datatype).slice(0, 30)}`,
      path: IRIS,
      body: irisInput({ datatype }),
      expect: "refused",
    });
  }
  const fp32Data: [string, string][] = [
    ["a word", '["abc",1,2,3]'],
    ["null", "[null,1,2,3]"],
    ["true", "[true,1,2,3]"],
    ["an object", "[{},1,2,3]"],
    ["a numeric string", '["1.5",1,2,3]'],
  ];
  for (const [what, raw] of fp32Data) {
    cases.push({
      label: `FP32 data with ${what}`,
      path: IRIS,
      body: irisWithRaw("data", raw),
      expect: "refused",
    });
  }
  // Nested lists are flattened, ragged ones too, as Triton reads them; the count still has to match.
  for (const raw of ['["NaN",1,2,3]', '["Infinity",1,2,3]', "[1e39,1,2,3]", "[1e-50,1,2,3]", "[[1],1,2,3]"]) {
    cases.push({ label: `FP32 data ${raw}`, path: IRIS, body: irisWithRaw("data", raw), expect: "any" });
  }
  const int64 = (raw: string) => `{"inputs":[{"name":"x","shape":[1,3],"datatype":"INT64","data":${raw}}]}`;
  for (const raw of [
    "[1.5,2,3]",
    '["abc",2,3]',
    "[1e30,2,3]",
    "[99999999999999999999,2,3]",
    "[-9223372036854775809,2,3]",
    '["9223372036854775808",2,3]',
    "[true,2,3]",
    "[null,2,3]",
    "[1e400,2,3]",
    "[-0.0001,2,3]",
  ]) {
    cases.push({ label: `INT64 data ${raw}`, path: INT64, body: int64(raw), expect: "refused" });
  }
  for (const data of [
    [1, 2, 3],
    [null, "a", "b"],
    [{}, "a", "b"],
    [true, "a", "b"],
    [["a"], "b", "c", "d"],
  ]) {
    cases.push({
      label: `BYTES data ${JSON.stringify(data)}`,
      path: BYTES,
      body: bytesBody(data, [1, 3]),
      expect: "refused",
    });
  }
  return cases;
}

function utf8Cases(): FuzzCase[] {
  const random = mulberry32(1606);
  const invalid: [string, number[]][] = [
    ["0xff", [0xff]],
    ["0xfe 0xff", [0xfe, 0xff]],
    ["an overlong slash", [0xc0, 0xaf]],
    ["an encoded surrogate", [0xed, 0xa0, 0x80]],
    ["a truncated euro sign", [0xe2, 0x82]],
    ["a five-byte form", [0xf8, 0x88, 0x80, 0x80, 0x80]],
    ["beyond U+10FFFF", [0xf4, 0x90, 0x80, 0x80]],
    ["a lone continuation byte", [0x80]],
    ["NUL", [0x00]],
  ];
  const cases: FuzzCase[] = [];
  for (const [what, bytes] of invalid) {
    const [before, after] = bytesBody(["hello", "PLACE", "x"]).split("PLACE") as [string, string];
    cases.push({
      label: `BYTES data holding ${what}`,
      path: BYTES,
      body: Buffer.concat([Buffer.from(before), Buffer.from(bytes), Buffer.from(after)]),
      expect: "any",
    });
    const [irisBefore, irisAfter] = irisBody(1).split('"shape"') as [string, string];
    cases.push({
      label: `raw body with ${what} between fields`,
      path: IRIS,
      body: Buffer.concat([Buffer.from(irisBefore), Buffer.from(bytes), Buffer.from(`"shape"${irisAfter}`)]),
      expect: "refused",
    });
  }
  for (const sequence of ["\\ud800", "\\udfff", "\\udbff\\udbff", "\\u0000", "\\uffff", "\\ud83d"]) {
    cases.push({
      label: `BYTES data with the escape ${sequence}`,
      path: BYTES,
      body: `{"inputs":[{"name":"x","shape":[1,3],"datatype":"BYTES","data":["${sequence}","a","b"]}]}`,
      expect: "any",
    });
  }
  cases.push({
    label: "iris body in UTF-16LE",
    path: IRIS,
    body: Buffer.from(irisBody(1), "utf16le"),
    expect: "refused",
  });
  for (let n = 0; n < 16; n++) {
    const bytes = Buffer.from(
      Array.from({ length: between(random, 1, 4000) }, () => between(random, 0, 255)),
    );
    cases.push({
      label: `${bytes.length} random bytes`,
      path: pick(random, [IRIS, BYTES, INT64]),
      body: bytes,
      contentType: pick(random, ["application/json", "application/octet-stream", null]),
      expect: "refused",
    });
  }
  return cases;
}

function contentTypeCases(): FuzzCase[] {
  const types = [
    "text/plain",
    "application/xml",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    "application/x-www-form-urlencoded",
    "image/png",
    null,
    "application/json; charset=utf-16",
    ";;;",
    `application/${"x".repeat(4000)}`,
    "application/json\tx",
    "*/*",
  ];
  const cases: FuzzCase[] = [];
  for (const contentType of types) {
    const label = contentType === null ? "none" : contentType.slice(0, 40);
    cases.push({
      label: `a valid body as ${label}`,
      path: IRIS,
      body: irisBody(2),
      contentType,
      expect: "any",
    });
    cases.push({
      label: `a truncated body as ${label}`,
      path: IRIS,
      body: irisBody(2).slice(0, 30),
      contentType,
      expect: "refused",
    });
  }
  return cases;
}

/** The path a URL parser makes of a trick: dot segments, escapes and a trailing slash resolved. */
function resolvedPath(path: string): string {
  const segments = new URL(path, "http://gateway.local").pathname.split("/").map((segment) => {
    try {
      return decodeURIComponent(segment);
    } catch {
      return segment;
    }
  });
  const resolved = segments.join("/");
  return resolved.length > 1 && resolved.endsWith("/") ? resolved.slice(0, -1) : resolved;
}

function pathCases(): FuzzCase[] {
  const random = mulberry32(1607);
  const models = [
    "..",
    "%2e%2e",
    "%2E%2E",
    ".",
    "..%2f..%2fetc%2fpasswd",
    "%2fetc%2fpasswd",
    "iris%2f..%2f..%2fadmin",
    "iris%2f..",
    "%2e%2e%2f%2e%2e%2fv2",
    "a".repeat(65),
    "a".repeat(8000),
    "%00",
    "iris%00",
    "%00iris",
    "IRIS",
    "Iris",
    "%C3%A9t%C3%A9",
    "%F0%9F%98%80",
    "%E2%80%AE",
    "%EF%BC%8Firis",
    "%C0%AE%C0%AE",
    "%",
    "%zz",
    "%e2%82",
    "iris%20",
    "%20iris",
    "iris;x",
    "iris%3binfer",
    "..%5c..%5cwindows",
    "~root",
    "iris.",
    "-iris",
    "_",
    "%69ris",
    "%252e%252e",
    "con",
    "nul.onnx",
  ];
  const versions = [
    "..",
    "%2e%2e",
    "-1",
    "0",
    "01",
    "1.0",
    "1e0",
    "99999999999",
    "9007199254740993",
    "latest",
    "default",
    "%20 1".replace(" ", "%20"),
    "9".repeat(400),
    "1%00",
    "1%2f..",
    "..%2f1",
    "%F0%9F%98%80",
    "1%2f..%2f..%2f2",
  ];
  const paths: string[] = [
    ...models.map((model) => `/v2/models/${model}/infer`),
    ...versions.map((version) => `/v2/models/iris/versions/${version}/infer`),
    "/v2/models/iris/../iris/infer",
    "/v2/models/iris/versions/1/../../iris/infer",
    "/v2/models/../../../etc/passwd",
    "/v2/models/..\\..\\infer",
    "/v2/models//infer",
    "//v2/models/iris/infer",
    "/v2/models/iris/infer/",
    "/v2/models/iris/infer?x=../../etc",
    "/v2/models/iris/infer%3f",
    "/v2/models/iris/infer;jsessionid=1",
    "/v2/models/iris/infer/..",
    "/v2/models/iris/versions//infer",
    "/v2/models/iris/versions/1/infer/extra",
    "/v2//models/iris/infer",
    "/V2/models/iris/infer",
    "/v2/models/iris/INFER",
  ];
  const alphabet = [
    "a",
    "z",
    "0",
    "-",
    "_",
    ".",
    "..",
    "%2e",
    "%2f",
    "%5c",
    "%00",
    "%ff",
    "%C3%A9",
    "%",
    "~",
    "@",
    "!",
  ];
  for (let n = 0; n < 20; n++) {
    const length = between(random, 1, 60);
    paths.push(`/v2/models/${Array.from({ length }, () => pick(random, alphabet)).join("")}/infer`);
  }
  const cases: FuzzCase[] = paths.map((path) => ({
    label: `POST ${path.slice(0, 80)}`,
    path,
    body: irisBody(1),
    expect: IRIS_INFER_PATHS.has(resolvedPath(path)) ? "any" : "refused",
  }));
  for (const method of ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"]) {
    cases.push({ label: `${method} ${IRIS}`, path: IRIS, method, body: irisBody(1), expect: "refused" });
  }
  return cases;
}

function fieldCases(): FuzzCase[] {
  const valid = JSON.parse(irisBody(1)) as { inputs: Record<string, unknown>[] };
  const input = valid.inputs[0]!;
  const body = (fields: Record<string, unknown>) => JSON.stringify({ ...valid, ...fields });
  const any = (label: string, text: string): FuzzCase => ({ label, path: IRIS, body: text, expect: "any" });
  const refused = (label: string, text: string, path = IRIS): FuzzCase => ({
    label,
    path,
    body: text,
    expect: "refused",
  });
  return [
    any("an unknown top-level field", body({ foo: 1 })),
    any("a top-level __proto__", `{"__proto__":{"inputs":[]},${irisBody(1).slice(1)}`),
    any("a top-level constructor", body({ constructor: { prototype: { polluted: true } } })),
    any("an unknown input field", JSON.stringify({ inputs: [{ ...input, foo: [1, 2] }] })),
    any("an input __proto__", JSON.stringify({ inputs: [{ ...input, ["__proto__"]: { shape: [9] } }] })),
    any("a 1 MB unknown field", body({ padding: "x".repeat(1_000_000) })),
    any("a repeated top-level key", `{"inputs":[],${irisBody(1).slice(1)}`),
    any("a repeated input key", irisBody(1).replace('{"name":"features"', '{"name":"x","name":"features"')),
    refused("the input given twice", JSON.stringify({ inputs: [input, input] })),
    refused(
      "the input given twice, with other shapes",
      JSON.stringify({ inputs: [input, { ...input, shape: [2, 4], data: Array(8).fill(1) }] }),
    ),
    refused(
      "the BYTES input given twice",
      JSON.stringify({
        inputs: [0, 1].map(() => ({ name: "x", shape: [1, 3], datatype: "BYTES", data: ["a", "b", "c"] })),
      }),
      BYTES,
    ),
    refused(
      "an unknown input beside the right one",
      JSON.stringify({ inputs: [input, { ...input, name: "extra" }] }),
    ),
    refused("an output asked for twice", body({ outputs: [{ name: "label" }, { name: "label" }] })),
    refused("an unknown output", body({ outputs: [{ name: "nope" }] })),
    refused("parameters as a string", body({ parameters: "x" })),
    refused("parameters as a number", body({ parameters: 5 })),
    refused("parameters as a list", body({ parameters: [1] })),
    refused("parameters null", body({ parameters: null })),
    refused("parameters true", body({ parameters: true })),
    refused("input parameters as a string", JSON.stringify({ inputs: [{ ...input, parameters: "x" }] })),
    refused("input parameters as a list", JSON.stringify({ inputs: [{ ...input, parameters: [] }] })),
    refused("outputs as a string", body({ outputs: "label" })),
    refused("outputs as an object", body({ outputs: { name: "label" } })),
    refused("an output name as a number", body({ outputs: [{ name: 5 }] })),
    refused("an output without a name", body({ outputs: [{}] })),
    refused("output parameters as a number", body({ outputs: [{ name: "label", parameters: 7 }] })),
    refused("id as a number", body({ id: 5 })),
    refused("id as an object", body({ id: {} })),
    refused("id null", body({ id: null })),
    refused("an input name as a number", JSON.stringify({ inputs: [{ ...input, name: 5 }] })),
    refused("an empty input name", JSON.stringify({ inputs: [{ ...input, name: "" }] })),
    any("binary_data_output as a string", body({ parameters: { binary_data_output: "yes" } })),
    any(
      "binary_data_size as a string",
      JSON.stringify({ inputs: [{ ...input, parameters: { binary_data_size: "abc" } }] }),
    ),
    any(
      "an output's binary_data as a number",
      body({ outputs: [{ name: "label", parameters: { binary_data: 3 } }] }),
    ),
    refused("the body null", "null"),
    refused("the body a list", "[]"),
    refused("the body a number", "0"),
    refused("the body a string", '"inputs"'),
    refused("the body true", "true"),
    refused("an empty object", "{}"),
    refused("no inputs", '{"inputs":[]}'),
    refused("inputs as an object", '{"inputs":{}}'),
    refused("a null input", '{"inputs":[null]}'),
    refused("a number as an input", '{"inputs":[1]}'),
    refused("an input with a name only", '{"inputs":[{"name":"features"}]}'),
  ];
}

describe("the infer route, fuzzed through the local stack", () => {
  it("refuses malformed JSON with a 4xx JSON error and no internals", async () => {
    expect(await violationsOf(malformedJsonCases())).toEqual([]);
  }, 60_000);

  it("refuses truncated JSON with a 4xx JSON error and no internals", async () => {
    expect(await violationsOf(truncatedJsonCases())).toEqual([]);
  }, 60_000);

  it("refuses bodies nested thousands to millions deep with a 4xx", async () => {
    expect(await violationsOf(nestingCases())).toEqual([]);
  }, 60_000);

  it("refuses huge, negative, fractional and non-numeric shapes with a 4xx", async () => {
    expect(await violationsOf(shapeCases())).toEqual([]);
  }, 60_000);

  it("refuses data whose length does not match its shape with a 4xx", async () => {
    expect(await violationsOf(lengthMismatchCases())).toEqual([]);
  }, 60_000);

  it("refuses wrong and unknown datatypes and elements of the wrong type with a 4xx", async () => {
    expect(await violationsOf(datatypeCases())).toEqual([]);
  }, 60_000);

  it("answers invalid UTF-8 in BYTES data and in the raw body without a 5xx", async () => {
    expect(await violationsOf(utf8Cases())).toEqual([]);
  }, 60_000);

  it("answers any content type without a 5xx, refusing a broken body with a 4xx", async () => {
    expect(await violationsOf(contentTypeCases())).toEqual([]);
  }, 60_000);

  it("refuses path tricks on the model name and version unless they resolve to iris itself", async () => {
    expect(await violationsOf(pathCases())).toEqual([]);
  }, 60_000);

  it("refuses duplicate inputs and mistyped fields, and ignores unknown ones, without a 5xx", async () => {
    expect(await violationsOf(fieldCases())).toEqual([]);
  }, 60_000);
});

describe("after the fuzz", () => {
  it("still reports ready and serves iris", async () => {
    const ready = await send({ method: "GET", path: "/v2/health/ready" });
    const iris = await send({ path: IRIS, body: irisBody(3) });

    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.text)).toEqual({ ready: true });
    expect(iris.status, iris.text).toBe(200);
    expect(
      (JSON.parse(iris.text) as { outputs: { name: string; data: unknown[] }[] }).outputs,
    ).toContainEqual(
      expect.objectContaining({ name: "label", data: expect.arrayContaining([expect.any(String)]) }),
    );
  }, 30_000);
});
