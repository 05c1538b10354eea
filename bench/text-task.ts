/**
 * `npm run bench:text`: a text-classification model's text route (a BYTES `text` input, tokenized by the
 * function) against its tensor route (the same token ids sent as `input_ids`, `attention_mask`,
 * `token_type_ids` INT64), in one run, for one sentence of exactly 32 tokens and for a batch of 8 such
 * sentences (issue 19: the text route should cost at most 1.3 × the tensor route). The model is the
 * seeded BERT-shaped classifier of models/bert.ts, published with bert-base-uncased's tokenizer.json,
 * at each hidden width asked for. Each form is an API Gateway event in and a response out (no HTTP),
 * through one handler in this process, in alternating blocks (AB, BA, ...) after a warm-up; the table
 * gives p50 and p99 over all blocks, text / tensor at p50, and the tokenizer's share of the text route,
 * (text − tensor) / text. Both routes must pick the same label with the same score, or it throws before
 * measuring. A line per model gives the first tensor request (the session load) and the first text
 * request after it (the tokenizer load), and a last line `tokenizer.encode` alone on the same texts.
 *   BENCH_TEXT_ITERATIONS (default 200) per form per block, BENCH_TEXT_ROUNDS (default 10) blocks per
 *   form, BENCH_TEXT_MODELS (default "h16,h256,h384l6") the models: `h<hidden>` the attention-free
 *   stand-ins, `h<hidden>l<layers>` with that many self-attention layers (h384l6 is all-MiniLM-L6-v2's
 *   shape and cost); those run a tenth of the iterations per block, each call taking milliseconds.
 * The same run then measures the image route against the tensor route, and each task library's cold
 * import and first use, in fresh processes: bench/image-task.ts.
 */
import { readFileSync } from "node:fs";
import { Logger } from "@aws-lambda-powertools/logger";
import { PutObjectCommand } from "@aws-sdk/client-s3";
import type { APIGatewayProxyEvent } from "aws-lambda";
import { uploadKey } from "#core/registry/manifest.ts";
import { isServable } from "#core/registry/registry.ts";
import type { TextBatch } from "#core/tasks/task.ts";
import { loadTextTokenizer } from "#core/tasks/tokenizer.ts";
import { createInferenceHandler, type ProxyHandler } from "#lambdas/inference/handler.ts";
import type { LocalStack } from "../local/stack.ts";
import { buildBertClassifierModel } from "../models/bert.ts";
import { optimizerIdle, startBenchStack } from "./bench-stack.ts";
import {
  callHandler as call,
  inferEvent,
  timeHandler as measure,
  responseOutput as output,
} from "./events.ts";
import {
  benchColdLibraries,
  benchImageRoute,
  IMAGE_MODEL,
  type ImageRouteFigures,
  printImageRoute,
  publishImageModel,
} from "./image-task.ts";
import { formatMs, median, muteStdout, percentile, printTable } from "./stats.ts";

const ITERATIONS = Number(process.env.BENCH_TEXT_ITERATIONS ?? 200);
const ROUNDS = Number(process.env.BENCH_TEXT_ROUNDS ?? 10);
const MODELS = (process.env.BENCH_TEXT_MODELS ?? "h16,h256,h384l6").split(",").map((spec) => {
  const match = /^h(\d+)(?:l(\d+))?$/.exec(spec);
  if (match === null) throw new Error(`BENCH_TEXT_MODELS: '${spec}' is not h<hidden> or h<hidden>l<layers>`);
  const layers = Number(match[2] ?? 0);
  return {
    label: spec,
    hidden: Number(match[1]),
    layers,
    iterations: layers > 0 ? Math.max(10, Math.round(ITERATIONS / 10)) : ITERATIONS,
  };
});

const TOKENS = 32;
const LABELS = ["negative", "neutral", "positive"];
const TOKENIZER = readFileSync(
  new URL("../models/fixtures/bert-uncased/tokenizer.json", import.meta.url),
  "utf8",
);

/** 32 bert-base-uncased tokens each, [CLS] and [SEP] included (checked before measuring). */
const SENTENCE =
  "The new coffee shop on the corner serves a surprisingly good espresso, but the staff seemed rather tired and the music was far too loud tonight.";
const BATCH = [
  SENTENCE,
  "The hotel room was clean and quiet, the breakfast was generous, and the staff at the front desk were always very friendly and extremely helpful to us.",
  "Our flight was delayed by three hours, nobody explained why, and the airline only offered us a small voucher for a cold sandwich at the gate.",
  "My grandmother loved the book, although she said the ending felt rushed and a few of the main characters were quite hard to tell apart at most times.",
  "The delivery driver left the package out in the rain, so the box was soaked and the printed instructions inside were completely ruined by the time I came.",
  "I ordered the blue jacket last week, and although it arrived right on time, the zipper broke after only two days of perfectly normal use at work.",
  "The battery lasts all day and the screen is bright, but the camera struggles badly in low light and the speakers sound very thin at a high volume.",
  "The software update fixed the crash on startup, but now the settings page takes several seconds to open and it sometimes forgets all of my saved choices.",
];

type Route = "text" | "tensor";

interface Case {
  readonly label: string;
  readonly rows: number;
  readonly events: Record<Route, APIGatewayProxyEvent>;
}

function textBody(texts: readonly string[]) {
  return { inputs: [{ name: "text", datatype: "BYTES", shape: [texts.length], data: texts }] };
}

/** What the text route feeds the model, as a client that tokenized for itself would send it. */
function tensorBody(batch: TextBatch) {
  const shape = [batch.batch, batch.length];
  const input = (name: string, values: BigInt64Array) => ({
    name,
    datatype: "INT64",
    shape,
    data: Array.from(values, Number),
  });
  return {
    inputs: [
      input("input_ids", batch.inputIds),
      input("attention_mask", batch.attentionMask),
      input("token_type_ids", batch.tokenTypeIds),
    ],
  };
}

/** Each row's label and score from the text route must be the argmax and softmax of the tensor route's logits. */
async function verify(handler: ProxyHandler, sample: Case): Promise<void> {
  const text = await call(handler, sample.events.text);
  const labels = output(text, "label").data;
  const scores = output(text, "score").data as number[];
  const logits = output(await call(handler, sample.events.tensor), "logits").data as number[];
  for (let row = 0; row < sample.rows; row++) {
    const values = logits.slice(row * LABELS.length, (row + 1) * LABELS.length);
    const best = values.indexOf(Math.max(...values));
    const sum = values.reduce((total, value) => total + Math.exp(value - values[best]!), 0);
    if (labels[row] !== LABELS[best] || Math.abs((scores[row] ?? Number.NaN) - 1 / sum) > 1e-5)
      throw new Error(
        `${sample.label} row ${row}: text says ${labels[row]} ${scores[row]}, tensor logits ${values.join(", ")}`,
      );
  }
}

/** Publishes the classifier with its tokenizer, the original pinned so that it serves what we built. */
async function publish(
  stack: LocalStack,
  model: string,
  shape: { hidden: number; layers: number },
  index: number,
): Promise<void> {
  await stack.emulators.s3Client().send(
    new PutObjectCommand({
      Bucket: stack.bucket,
      Key: uploadKey(model, 1, "tokenizer.json"),
      // Trailing whitespace only: a sha256 of its own, so each model's first text request loads a tokenizer.
      Body: TOKENIZER + "\n".repeat(index),
    }),
  );
  const version = await stack.publish(
    model,
    1,
    buildBertClassifierModel({ labels: LABELS.length, ...shape, seed: 7 }),
    {
      manifest: {
        task: "text-classification",
        tokenizer: "tokenizer.json",
        labels: LABELS,
        pinOriginal: true,
      },
      timeoutMs: 120_000,
    },
  );
  if (!isServable(version)) throw new Error(`${model} did not register: ${JSON.stringify(version)}`);
}

async function main() {
  const tokenizer = await loadTextTokenizer(TOKENIZER);
  for (const text of BATCH) {
    const { length } = tokenizer.encode([text], 512);
    if (length !== TOKENS) throw new Error(`"${text}" is ${length} tokens, not ${TOKENS}`);
  }
  const single = tokenizer.encode([SENTENCE], 512);
  const batch = tokenizer.encode(BATCH, 512);

  const { stack, close } = await startBenchStack("text-task", { demo: false });
  try {
    const models = MODELS.map((model) => ({ ...model, name: `text-bench-${model.label}` }));
    for (const [index, model] of models.entries()) await publish(stack, model.name, model, index);
    await publishImageModel(stack);
    await optimizerIdle(stack, [...models.map((model) => model.name), IMAGE_MODEL]);

    // Handler logs go nowhere, but are still formatted and written, as in Lambda.
    const logger = new Logger({ serviceName: "maas-inference", logLevel: "INFO" });
    const handler = createInferenceHandler(stack.inference.service, logger, {});
    const rows: string[][] = [];
    const firsts: string[] = [];
    const ratios: string[] = [];
    let images: ImageRouteFigures;
    const silence = muteStdout();
    try {
      for (const { name, label, iterations } of models) {
        const cases: Case[] = [
          {
            label: "1 × 32 tokens",
            rows: 1,
            events: {
              text: inferEvent(name, textBody([SENTENCE])),
              tensor: inferEvent(name, tensorBody(single)),
            },
          },
          {
            label: "8 × 32 tokens",
            rows: BATCH.length,
            events: { text: inferEvent(name, textBody(BATCH)), tensor: inferEvent(name, tensorBody(batch)) },
          },
        ];
        const [one] = cases as [Case];
        // The session loads on the first request of either route; the tokenizer on the first text one.
        const firstTensor = (await measure(handler, one.events.tensor, 1))[0] ?? Number.NaN;
        const firstText = (await measure(handler, one.events.text, 1))[0] ?? Number.NaN;
        for (const sample of cases) await verify(handler, sample);

        for (const sample of cases) {
          const times: Record<Route, number[]> = { text: [], tensor: [] };
          for (const route of ["text", "tensor"] as const)
            await measure(handler, sample.events[route], Math.min(50, iterations));
          for (let round = 0; round < ROUNDS; round++) {
            const order: Route[] = round % 2 === 0 ? ["text", "tensor"] : ["tensor", "text"];
            for (const route of order)
              times[route].push(...(await measure(handler, sample.events[route], iterations)));
          }
          const p50 = { text: median(times.text), tensor: median(times.tensor) };
          const share = (p50.text - p50.tensor) / p50.text;
          rows.push([
            label,
            sample.label,
            formatMs(p50.tensor),
            formatMs(percentile(times.tensor, 99)),
            formatMs(p50.text),
            formatMs(percentile(times.text, 99)),
            (p50.text / p50.tensor).toFixed(2),
            `${(share * 100).toFixed(0)}%`,
          ]);
          ratios.push(`${label} ${sample.label}: ${(p50.text / p50.tensor).toFixed(2)}×`);
          if (sample === one)
            firsts.push(
              `${label}: first tensor request ${formatMs(firstTensor)} ms (session load), first text request after it ${formatMs(firstText)} ms (tokenizer load), warm text p50 ${formatMs(p50.text)} ms`,
            );
        }
      }
      images = await benchImageRoute(handler);
    } finally {
      silence();
    }

    console.log(
      `\nBERT-shaped classifier (seed 7, ${LABELS.length} labels), bert-base-uncased tokenizer; handler only (event in, response out), ${ROUNDS} alternating blocks × ${ITERATIONS} calls per form (a tenth for models with attention layers)\n`,
    );
    printTable(
      [
        "model",
        "request",
        "tensor p50 ms",
        "tensor p99 ms",
        "text p50 ms",
        "text p99 ms",
        "text / tensor (p50)",
        "tokenizer share",
      ],
      rows,
    );
    const encode = (texts: readonly string[]) => {
      const times: number[] = [];
      for (let i = 0; i < ROUNDS * ITERATIONS; i++) {
        const start = performance.now();
        tokenizer.encode(texts, 512);
        times.push(performance.now() - start);
      }
      return formatMs(median(times));
    };
    console.log(
      `\ntokenizer.encode alone (no handler), p50: 1 × 32 tokens ${encode([SENTENCE])} ms, 8 × 32 tokens ${encode(BATCH)} ms`,
    );
    console.log(`\nOne-time loads:\n${firsts.map((line) => `  ${line}`).join("\n")}`);
    console.log(`\nText route at most 1.3 × the tensor route? ${ratios.join(", ")}`);
    printImageRoute(images);
    await benchColdLibraries();
  } finally {
    await close();
  }
}

await main();
