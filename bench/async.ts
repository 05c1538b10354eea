import { buildImageMeanModel } from "../models/zoo.ts";
import { BENCH_API_KEY, startBenchStack } from "./bench-stack.ts";
import { formatMs, median, printTable } from "./stats.ts";

const IMAGES = Number(process.env.BENCH_ASYNC_IMAGES ?? 21);
const ROUNDS = Number(process.env.BENCH_ASYNC_ROUNDS ?? 4);
const PART_BYTES = 8 * 1024 * 1024;

/** A binary tensor data extension body: the JSON header, then the images' float32 bytes. */
function binaryBody(images: number): { body: Buffer; headerLength: number } {
  const pixels = new Float32Array(images * 3 * 640 * 640);
  for (let i = 0; i < pixels.length; i++) pixels[i] = Math.sin(i * 0.37);
  const json = JSON.stringify({
    inputs: [
      {
        name: "image",
        shape: [images, 3, 640, 640],
        datatype: "FP32",
        parameters: { binary_data_size: pixels.byteLength },
      },
    ],
    parameters: { binary_data_output: true },
  });
  // Padded with spaces to a multiple of 64 bytes, so the worker reads the tensor in place (binary-data.ts).
  const header = Buffer.from(json.padEnd(Math.ceil(json.length / 64) * 64, " "));
  return { body: Buffer.concat([header, Buffer.from(pixels.buffer)]), headerLength: header.length };
}

async function api(url: string, path: string, init: RequestInit = {}): Promise<Response> {
  const response = await fetch(`${url}${path}`, {
    ...init,
    headers: { "x-api-key": BENCH_API_KEY, "content-type": "application/json", ...init.headers },
  });
  if (!response.ok && response.status !== 202)
    throw new Error(`${path} answered ${response.status}: ${await response.text()}`);
  return response;
}

/** The body to a new upload URI by presigned parts; returns the input_uri. */
async function upload(url: string, body: Buffer): Promise<string> {
  const parts = Math.ceil(body.length / PART_BYTES);
  const ticket = (await (
    await api(url, "/v2/uploads", { method: "POST", body: JSON.stringify({ parts }) })
  ).json()) as { input_uri: string; part_urls: string[]; complete_url: string };
  const etags: string[] = [];
  for (const [i, partUrl] of ticket.part_urls.entries()) {
    const put = await fetch(partUrl, {
      method: "PUT",
      body: body.subarray(i * PART_BYTES, (i + 1) * PART_BYTES),
    });
    if (!put.ok) throw new Error(`part ${i + 1} answered ${put.status}`);
    etags.push(put.headers.get("etag") ?? "");
  }
  const completed = etags.map(
    (etag, i) => `<Part><PartNumber>${i + 1}</PartNumber><ETag>${etag}</ETag></Part>`,
  );
  const complete = await fetch(ticket.complete_url, {
    method: "POST",
    body: `<CompleteMultipartUpload>${completed.join("")}</CompleteMultipartUpload>`,
  });
  if (!complete.ok) throw new Error(`completion answered ${complete.status}`);
  return ticket.input_uri;
}

async function asyncInference(url: string, body: Buffer, headerLength: number): Promise<number> {
  const inputUri = await upload(url, body);
  const submitted = await api(url, "/v2/models/image-mean/infer", {
    method: "POST",
    headers: { prefer: "respond-async" },
    body: JSON.stringify({ input_uri: inputUri, inference_header_content_length: headerLength }),
  });
  const { id } = (await submitted.json()) as { id: string };
  for (;;) {
    const job = (await (await api(url, `/v2/jobs/${id}`)).json()) as {
      status: string;
      error?: string;
      output_url?: string;
    };
    if (job.status === "failed") throw new Error(`job ${id} failed: ${job.error}`);
    if (job.status === "succeeded") {
      const result = await fetch(job.output_url as string);
      return (await result.arrayBuffer()).byteLength;
    }
    await new Promise((wake) => setTimeout(wake, 20));
  }
}

async function main() {
  const { stack, close } = await startBenchStack("async", { demo: false });
  try {
    await stack.publish("image-mean", 1, buildImageMeanModel(), { manifest: { pinOriginal: true } });
    const { body, headerLength } = binaryBody(IMAGES);
    // Warm-up: the worker's session and the emulator's first large writes.
    await asyncInference(stack.url, body, headerLength);
    const times: Record<"bare" | "async", number[]> = { bare: [], async: [] };
    let resultBytes = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const order: ("bare" | "async")[] = round % 2 === 0 ? ["bare", "async"] : ["async", "bare"];
      for (const side of order) {
        const started = performance.now();
        if (side === "bare") await upload(stack.url, body);
        else resultBytes = await asyncInference(stack.url, body, headerLength);
        times[side].push(performance.now() - started);
      }
    }
    const bare = median(times.bare);
    const whole = median(times.async);
    console.log(
      `asynchronous inference of a ${(body.length / 1e6).toFixed(1)} MB binary input (${IMAGES} images of 1x3x640x640 FP32), median of ${ROUNDS} alternating rounds\n`,
    );
    printTable(
      ["path", "ms", "ratio"],
      [
        ["bare S3 transfer: presigned multipart upload of the bytes", formatMs(bare), "1.000"],
        [
          `async: the same upload, submit, job, ${resultBytes}-byte result fetched`,
          formatMs(whole),
          (whole / bare).toFixed(3),
        ],
      ],
    );
  } finally {
    await close();
  }
}

await main();
