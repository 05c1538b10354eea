/**
 * `npm run bench:v2-json`: the hand-written FP32 JSON reader and writer against JSON.parse and
 * JSON.stringify, in one run. Reading: which of the three paths each common request form takes (the
 * plain one-pass reader, the data-list scan with JSON.parse on the rest, or JSON.parse and zod alone),
 * and what the two fast paths save over the general one. Writing: an output's FP32 data list.
 * The forms are what the V2 clients people use send: curl as in the README, Triton's and KServe's
 * Python clients (outputs with `parameters`), several inputs, nested data lists.
 */
import { mulberry32 } from "#core/tensor/seeded-random.ts";
import { float32ArrayJson } from "#core/v2/float32-json.ts";
import { parseInferRequest, parseInferRequestBody, parseTensorDocument } from "#core/v2/parse.ts";
import { bodyBytes, floatsFor, InferBodyScan, readPlainFloat32Request } from "#core/v2/request-scan.ts";
import { decodeInput } from "#core/v2/tensor-codec.ts";
import { formatMs, median, printTable } from "./stats.ts";

function values(count: number, seed: number): number[] {
  const next = mulberry32(seed);
  return Array.from({ length: count }, () => (next() - 0.5) * 8);
}

function nested(flat: number[], rows: number): number[][] {
  const width = flat.length / rows;
  return Array.from({ length: rows }, (_, row) => flat.slice(row * width, (row + 1) * width));
}

function forms(count: number): Record<string, string> {
  const data = values(count, count);
  const input = { name: "input", shape: [1, count], datatype: "FP32", data };
  return {
    "curl, README form": JSON.stringify({ inputs: [input] }),
    "with id and outputs by name": JSON.stringify({
      id: "42",
      inputs: [input],
      outputs: [{ name: "output" }],
    }),
    "Triton client (outputs binary_data: false)": JSON.stringify({
      inputs: [input],
      outputs: [{ name: "output", parameters: { binary_data: false } }],
    }),
    "KServe client (request parameters)": JSON.stringify({
      id: "7f1c",
      parameters: { headers: {} },
      inputs: [{ ...input, parameters: {} }],
    }),
    "two FP32 inputs and an INT64 one": JSON.stringify({
      inputs: [
        input,
        { ...input, name: "mask" },
        { name: "ids", shape: [1, 2], datatype: "INT64", data: [1, 2] },
      ],
    }),
    "nested data list (rows)": JSON.stringify({
      inputs: [{ ...input, shape: [4, count / 4], data: nested(data, 4) }],
    }),
  };
}

function tierOf(body: string): "plain" | "scan" | "general" {
  const bytes = bodyBytes(body);
  if (bytes === undefined) return "general";
  const floats = floatsFor(body.length);
  if (readPlainFloat32Request(body, bytes, floats) !== undefined) return "plain";
  const scan = new InferBodyScan(bytes, body.length, floats);
  return scan.run() && scan.spans.some((span) => span !== undefined) ? "scan" : "general";
}

const served = (body: string) => parseInferRequestBody(body).inputs.map(decodeInput);
const general = (body: string) =>
  parseTensorDocument(body, parseInferRequest, (r) => r.inputs).inputs.map(decodeInput);

/** Median µs per call of each function on `input`, timed in alternating batches. */
function compare<T>(
  input: T,
  sides: readonly ((input: T) => unknown)[],
  rounds: number,
  batch: number,
): number[] {
  const times = sides.map(() => [] as number[]);
  for (let round = 0; round < rounds; round++) {
    sides.forEach((side, index) => {
      const start = performance.now();
      for (let i = 0; i < batch; i++) side(input);
      times[index]!.push(((performance.now() - start) * 1000) / batch);
    });
  }
  return times.map(median);
}

for (const count of [1024, 150_528]) {
  console.log(`\n${count} FP32 values per input\n`);
  printTable(
    ["request form", "path taken", "served µs", "JSON.parse + zod µs", "general / served"],
    Object.entries(forms(count)).map(([name, body]) => {
      const batch = Math.max(1, Math.round(200_000 / body.length));
      const [fast = Number.NaN, slow = Number.NaN] = compare(
        body,
        [served, general],
        count > 10_000 ? 15 : 40,
        batch,
      );
      return [name, tierOf(body), formatMs(fast), formatMs(slow), (slow / fast).toFixed(2)];
    }),
  );
}

console.log("\nwriting an output's FP32 data list\n");
printTable(
  ["values", "float32ArrayJson µs", "JSON.stringify µs", "stringify / ours"],
  [1024, 150_528].map((count) => {
    const data = Float32Array.from(values(count, 3));
    const [ours = Number.NaN, library = Number.NaN] = compare(
      data,
      [float32ArrayJson, (floats: Float32Array) => JSON.stringify(Array.from(floats))],
      count > 10_000 ? 15 : 40,
      Math.max(1, Math.round(100_000 / count)),
    );
    return [String(count), formatMs(ours), formatMs(library), (library / ours).toFixed(2)];
  }),
);
