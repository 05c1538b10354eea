/**
 * One task library's cold start, in a fresh process (bundled by bench/image-task.ts as the function's
 * asset is, the library external; run with plain node):
 *   sharp <image file>                    import sharp, then pre-process the image as PaddleOCR's
 *                                         classifier's first request does (preprocessImages), then
 *                                         once more warm
 *   tokenizers <tokenizer.json>           import @huggingface/tokenizers, then build the tokenizer and
 *                                         encode a sentence (loadTextTokenizer), then encode once more
 * Prints one JSON line of timings in milliseconds: importMs, firstUseMs, warmMs.
 */
import { readFile } from "node:fs/promises";
import { preprocessImages } from "#core/tasks/image.ts";
import { loadTextTokenizer } from "#core/tasks/tokenizer.ts";
import { PADDLE_CLS_IMAGE } from "../models/paddle-ocr.ts";

const [mode, file = ""] = process.argv.slice(2);

async function timed(work: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await work();
  return performance.now() - start;
}

async function sharp(path: string) {
  const image = await readFile(path);
  const importMs = await timed(() => import("sharp"));
  const firstUseMs = await timed(() => preprocessImages([image], PADDLE_CLS_IMAGE));
  const warmMs = await timed(() => preprocessImages([image], PADDLE_CLS_IMAGE));
  return { importMs, firstUseMs, warmMs };
}

async function tokenizers(path: string) {
  const json = await readFile(path, "utf8");
  const sentence = ["The new coffee shop on the corner serves a surprisingly good espresso."];
  const importMs = await timed(() => import("@huggingface/tokenizers"));
  let encode: () => unknown = () => undefined;
  const firstUseMs = await timed(async () => {
    const tokenizer = await loadTextTokenizer(json);
    encode = () => tokenizer.encode(sentence, 512);
    encode();
  });
  const warmMs = await timed(async () => encode());
  return { importMs, firstUseMs, warmMs };
}

if (mode !== "sharp" && mode !== "tokenizers") throw new Error(`unknown mode '${mode}'`);
const result = mode === "sharp" ? await sharp(file) : await tokenizers(file);
process.stdout.write(`${JSON.stringify(result)}\n`);
