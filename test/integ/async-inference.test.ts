/**
 * Asynchronous inference through the local stack, as a caller uses it: POST /v2/uploads, a PUT (or
 * multipart parts) to the presigned URL, infer with `Prefer: respond-async`, GET /v2/jobs/<id> until it
 * ends, then the presigned result. The worker runs on the local jobs queue.
 */
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LocalStack } from "../../local/stack.ts";
import { buildImageMeanModel } from "../../models/zoo.ts";
import { decodeBinaryResponse, encodeBinaryRequest } from "../support/binary-v2.ts";
import { startTestStack, stopTestStack, TEST_ADMIN_KEY, TEST_API_KEY } from "../support/local-stack.ts";

const IRIS_ROWS = [
  [5.1, 3.5, 1.4, 0.2],
  [6.7, 3.1, 4.7, 1.5],
];
const IMAGE_SHAPE = [1, 3, 640, 640];

let stack: LocalStack | undefined;
let dataDir: string | undefined;

function api(path: string, init: RequestInit & { key?: string } = {}): Promise<Response> {
  const { key, ...rest } = init;
  return fetch(`${stack!.url}${path}`, {
    ...rest,
    headers: { "x-api-key": key ?? TEST_API_KEY, ...rest.headers },
    signal: AbortSignal.timeout(30_000),
  });
}

interface JobView {
  id: string;
  status: string;
  model_name: string;
  model_version: string;
  error?: string;
  output_url?: string;
  inference_header_content_length?: number;
}

async function submit(path: string, body: string, headers: Record<string, string> = {}): Promise<string> {
  const response = await api(path, {
    method: "POST",
    body,
    headers: { prefer: "respond-async", "content-type": "application/json", ...headers },
  });
  const text = await response.text();
  expect(response.status, text).toBe(202);
  const { id, status } = JSON.parse(text) as { id: string; status: string };
  expect(status).toBe("queued");
  expect(response.headers.get("location")).toBe(`/v2/jobs/${id}`);
  return id;
}

async function settled(id: string, timeoutMs = 60_000): Promise<JobView> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const response = await api(`/v2/jobs/${id}`);
    expect(response.status).toBe(200);
    const job = (await response.json()) as JobView;
    if (job.status === "succeeded" || job.status === "failed") return job;
    if (Date.now() > deadline) throw new Error(`job ${id} is still ${job.status}`);
    await new Promise((wake) => setTimeout(wake, 50));
  }
}

async function result(job: JobView): Promise<Buffer> {
  expect(job.status, job.error).toBe("succeeded");
  const response = await fetch(job.output_url!, { signal: AbortSignal.timeout(30_000) });
  expect(response.status).toBe(200);
  return Buffer.from(await response.arrayBuffer());
}

async function upload(body: Buffer, parts?: number): Promise<string> {
  const response = await api("/v2/uploads", {
    method: "POST",
    body: parts === undefined ? "" : JSON.stringify({ parts }),
    headers: { "content-type": "application/json" },
  });
  expect(response.status).toBe(200);
  const ticket = (await response.json()) as {
    url?: string;
    input_uri: string;
    expires_in: number;
    part_urls?: string[];
    complete_url?: string;
  };
  expect(ticket.input_uri).toMatch(/^s3:\/\/[^/]+\/async\/inputs\/[A-Za-z0-9_-]+$/);
  expect(ticket.expires_in).toBeGreaterThan(0);
  if (parts === undefined) {
    const put = await fetch(ticket.url!, { method: "PUT", body, signal: AbortSignal.timeout(60_000) });
    expect(put.status, await put.text()).toBe(200);
    return ticket.input_uri;
  }
  const size = Math.ceil(body.length / parts);
  const etags: string[] = [];
  for (const [i, url] of ticket.part_urls!.entries()) {
    const put = await fetch(url, {
      method: "PUT",
      body: body.subarray(i * size, (i + 1) * size),
      signal: AbortSignal.timeout(60_000),
    });
    expect(put.status, await put.text()).toBe(200);
    etags.push(put.headers.get("etag") ?? "");
  }
  const complete = await fetch(ticket.complete_url!, {
    method: "POST",
    body:
      "<CompleteMultipartUpload>" +
      etags.map((etag, i) => `<Part><PartNumber>${i + 1}</PartNumber><ETag>${etag}</ETag></Part>`).join("") +
      "</CompleteMultipartUpload>",
    signal: AbortSignal.timeout(60_000),
  });
  expect(complete.status, await complete.text()).toBe(200);
  return ticket.input_uri;
}

function irisJson(): string {
  return JSON.stringify({
    inputs: [{ name: "features", shape: [2, 4], datatype: "FP32", data: IRIS_ROWS.flat() }],
  });
}

/** Deterministic pixels; float32 so JSON and binary carry the same values. */
function imagePixels(batch = 1): Float32Array {
  const count = batch * 3 * 640 * 640;
  return Float32Array.from({ length: count }, (_, i) => Math.sin(i * 0.37));
}

async function directMean(pixels: Float32Array, batch: number): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(buildImageMeanModel());
  try {
    const { mean } = await session.run({ image: new ort.Tensor("float32", pixels, [batch, 3, 640, 640]) });
    return mean!.data as Float32Array;
  } finally {
    await session.release();
  }
}

beforeAll(async () => {
  ({ stack, dataDir } = await startTestStack("async", { demo: true }));
  await stack.publish("image-mean", 1, buildImageMeanModel(), { manifest: { pinOriginal: true } });
}, 120_000);

afterAll(() => stopTestStack(stack, dataDir));

describe("asynchronous inference", () => {
  it("answers an inline JSON request by a job whose result is the synchronous response", async () => {
    const sync = await api("/v2/models/iris/infer", {
      method: "POST",
      body: irisJson(),
      headers: { "content-type": "application/json" },
    });
    const id = await submit("/v2/models/iris/infer", irisJson());

    const job = await settled(id);

    expect(job).toMatchObject({ id, model_name: "iris", model_version: "1", status: "succeeded" });
    expect(JSON.parse((await result(job)).toString("utf8"))).toEqual(await sync.json());
  }, 60_000);

  // Padded to 64 bytes, the worker reads the tensor where S3's bytes landed; unpadded, from a copy.
  it.each([
    ["as sent", 1],
    ["with its JSON header padded to 64 bytes", 64],
  ])(
    "runs a 1x3x640x640 FP32 image sent in binary through an upload, %s, and answers in binary",
    async (_, align) => {
      const pixels = imagePixels();
      const encoded = encodeBinaryRequest({
        inputs: [{ name: "image", datatype: "FP32", shape: IMAGE_SHAPE, data: pixels, binary: true }],
        parameters: { binary_data_output: true },
      });
      const headerLength = Math.ceil(encoded.headerLength / align) * align;
      const body = Buffer.concat([
        Buffer.from(
          encoded.body.toString("latin1", 0, encoded.headerLength).padEnd(headerLength, " "),
          "latin1",
        ),
        encoded.body.subarray(encoded.headerLength),
      ]);
      const inputUri = await upload(body);

      const id = await submit(
        "/v2/models/image-mean/infer",
        JSON.stringify({ input_uri: inputUri, inference_header_content_length: headerLength }),
      );
      const job = await settled(id);

      expect(job.inference_header_content_length).toBeGreaterThan(0);
      const decoded = decodeBinaryResponse(await result(job), job.inference_header_content_length);
      const mean = decoded.outputs.find((output) => output.name === "mean");
      expect(Array.from(mean!.values as Float32Array)).toEqual(Array.from(await directMean(pixels, 1)));
    },
    90_000,
  );

  it("takes an input uploaded in multipart parts, past the emulator's single-request limit", async () => {
    const batch = 5; // 24.6 MB of binary pixels
    const pixels = imagePixels(batch);
    const { body, headerLength } = encodeBinaryRequest({
      inputs: [{ name: "image", datatype: "FP32", shape: [batch, 3, 640, 640], data: pixels, binary: true }],
    });
    const inputUri = await upload(body, 3);

    const id = await submit(
      "/v2/models/image-mean/infer",
      JSON.stringify({ input_uri: inputUri, inference_header_content_length: headerLength }),
    );
    const job = await settled(id, 120_000);

    const answer = JSON.parse((await result(job)).toString("utf8")) as {
      outputs: { name: string; data: number[] }[];
    };
    const expected = await directMean(pixels, batch);
    // JSON carries float32 outputs in their shortest form: read back as float32, they are the same.
    expect(Float32Array.from(answer.outputs[0]!.data)).toEqual(expected);
  }, 180_000);

  it("shows a job only to the key that submitted it, and an unknown id to nobody", async () => {
    const id = await submit("/v2/models/iris/infer", irisJson());
    await settled(id);

    const other = await api(`/v2/jobs/${id}`, { key: TEST_ADMIN_KEY });
    const unknown = await api("/v2/jobs/AAAAAAAAAAAAAAAAAAAAAA");

    // The admin key does not open /v2 routes at all; the gateway refuses it before the function.
    expect(other.status).toBe(403);
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toEqual({ error: "job 'AAAAAAAAAAAAAAAAAAAAAA' not found" });
  }, 60_000);

  it("refuses an input_uri that is not an upload of this service, or names nothing", async () => {
    const foreign = await api("/v2/models/iris/infer", {
      method: "POST",
      headers: { prefer: "respond-async", "content-type": "application/json" },
      body: JSON.stringify({ input_uri: `s3://${stack!.bucket}/models/iris/1/model.onnx` }),
    });
    const missing = await api("/v2/models/iris/infer", {
      method: "POST",
      headers: { prefer: "respond-async", "content-type": "application/json" },
      body: JSON.stringify({ input_uri: `s3://${stack!.bucket}/async/inputs/nothing-here` }),
    });

    expect(foreign.status).toBe(400);
    expect(((await foreign.json()) as { error: string }).error).toMatch(/input_uri must be an upload URI/);
    expect(missing.status).toBe(400);
    expect(((await missing.json()) as { error: string }).error).toMatch(/nothing was uploaded/);
  });

  it("refuses an inline request that is wrong before it becomes a job, and 404s an unknown model", async () => {
    const wrong = await api("/v2/models/iris/infer", {
      method: "POST",
      headers: { prefer: "respond-async", "content-type": "application/json" },
      body: '{"inputs": [{"name": "features"}]',
    });
    const unknown = await api("/v2/models/nope/infer", {
      method: "POST",
      headers: { prefer: "respond-async", "content-type": "application/json" },
      body: irisJson(),
    });

    expect(wrong.status).toBe(400);
    expect(unknown.status).toBe(404);
  });

  it("ends a job whose uploaded request the model refuses as failed, with the reason", async () => {
    const body = Buffer.from(
      JSON.stringify({ inputs: [{ name: "features", shape: [1, 3], datatype: "FP32", data: [1, 2, 3] }] }),
    );
    const inputUri = await upload(body);

    const job = await settled(await submit("/v2/models/iris/infer", JSON.stringify({ input_uri: inputUri })));

    expect(job.status).toBe("failed");
    expect(job.error).toMatch(/features/);
    expect(job.output_url).toBeUndefined();
  }, 60_000);
});

describe("asynchronous inference across a restart", () => {
  it("runs a job submitted while no worker ran, once the stack is back on the same data", async () => {
    const { stack: first, dataDir: dir } = await startTestStack("async-restart", {
      demo: true,
      runJobs: false,
    });
    let second: LocalStack | undefined;
    try {
      const submitted = await fetch(`${first.url}/v2/models/iris/infer`, {
        method: "POST",
        headers: { "x-api-key": TEST_API_KEY, prefer: "respond-async", "content-type": "application/json" },
        body: irisJson(),
      });
      expect(submitted.status).toBe(202);
      const { id } = (await submitted.json()) as { id: string };
      await first.close();

      ({ stack: second } = await startTestStack("async-restart", { dataDir: dir, demo: false }));
      const deadline = Date.now() + 60_000;
      let job: JobView;
      for (;;) {
        job = (await (
          await fetch(`${second.url}/v2/jobs/${id}`, { headers: { "x-api-key": TEST_API_KEY } })
        ).json()) as JobView;
        if (job.status === "succeeded" || job.status === "failed" || Date.now() > deadline) break;
        await new Promise((wake) => setTimeout(wake, 50));
      }
      expect(job.status, job.error).toBe("succeeded");
      const answer = (await (await fetch(job.output_url!)).json()) as { outputs: { name: string }[] };
      expect(answer.outputs.map((output) => output.name)).toContain("label");
    } finally {
      await stopTestStack(second, dir);
      await first.close().catch(() => undefined);
    }
  }, 120_000);
});
