/**
 * `npm run bench:request-tiers`: which of the request reader's three paths each common request form
 * takes (the plain one-pass reader, the data-list scan with JSON.parse on the rest, or JSON.parse and
 * zod alone), and what the two fast paths save over the general one, measured in one run.
 * The forms are what the V2 clients people use send: curl as in the README, Triton's and KServe's
 * Python clients (outputs with `parameters`), several inputs, nested data lists.
 */
import { mulberry32 } from "#core/tensor/seeded-random.ts";
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

/** Median µs per call, the two functions timed in alternating batches. */
function compare(body: string, rounds: number): { served: number; general: number } {
  const times = { served: [] as number[], general: [] as number[] };
  const batch = Math.max(1, Math.round(200_000 / body.length));
  for (let round = 0; round < rounds; round++) {
    for (const [side, read] of [
      ["served", served],
      ["general", general],
    ] as const) {
      const start = performance.now();
      for (let i = 0; i < batch; i++) read(body);
      times[side].push(((performance.now() - start) * 1000) / batch);
    }
  }
  return { served: median(times.served), general: median(times.general) };
}

for (const count of [1024, 150_528]) {
  console.log(`\n${count} FP32 values per input\n`);
  printTable(
    ["request form", "path taken", "served µs", "JSON.parse + zod µs", "general / served"],
    Object.entries(forms(count)).map(([name, body]) => {
      const { served: fast, general: slow } = compare(body, count > 10_000 ? 15 : 40);
      return [name, tierOf(body), formatMs(fast), formatMs(slow), (slow / fast).toFixed(2)];
    }),
  );
}
