/**
 * One cold start, in a fresh process (bundled by bench/inference.ts, run with plain node):
 *   raw <model.onnx> <dim> <options>   import onnxruntime-node, create a session from a local file, run once
 *   handler <handler.mjs> <model> <dim> import the bundled inference handler, serve one infer request
 *                                       (registry read, S3 download, sha256, session create, run)
 *   transfer <bucket> <key>             stream the object from the S3 endpoint to nowhere with the
 *                                       handler's client (emulator speed)
 * Prints one JSON line of timings in milliseconds.
 */
import { pathToFileURL } from "node:url";

const [mode, first = "", second = "", third = ""] = process.argv.slice(2);
const t0 = performance.now();

async function raw(modelPath: string, dim: number, options: string) {
  const ort = await import("onnxruntime-node");
  const imported = performance.now();
  const session = await ort.InferenceSession.create(modelPath, JSON.parse(options));
  const created = performance.now();
  const input = session.inputNames[0] as string;
  await session.run({ [input]: new ort.Tensor("float32", new Float32Array(dim), [1, dim]) });
  const done = performance.now();
  return { importMs: imported - t0, createMs: created - imported, runMs: done - created, totalMs: done - t0 };
}

async function handler(bundle: string, model: string, dim: number) {
  const { handler } = (await import(pathToFileURL(bundle).href)) as {
    handler: (event: unknown, context: unknown) => Promise<{ statusCode: number; body: string }>;
  };
  const imported = performance.now();
  const body = JSON.stringify({
    inputs: [{ name: "input", shape: [1, dim], datatype: "FP32", data: new Array(dim).fill(0) }],
  });
  const result = await handler(
    {
      httpMethod: "POST",
      path: `/v2/models/${model}/infer`,
      resource: "/{proxy+}",
      headers: { "content-type": "application/json" },
      body,
      isBase64Encoded: false,
      requestContext: { requestId: "cold" },
    },
    { awsRequestId: "cold", functionName: "maas-inference-bench", getRemainingTimeInMillis: () => 30_000 },
  );
  const done = performance.now();
  if (result.statusCode !== 200) throw new Error(`cold infer failed: ${result.statusCode} ${result.body}`);
  return { importMs: imported - t0, firstRequestMs: done - imported, totalMs: done - t0 };
}

/** The handler's own S3 client, so that only moving the bytes is measured, not how a client moves them. */
async function transfer(bucket: string, key: string) {
  const { AwsHttpClient } = await import("#aws/http/aws-http.ts");
  const { s3ObjectUrl } = await import("#aws/s3/http-source.ts");
  const s3 = new AwsHttpClient("s3");
  const started = performance.now();
  const { body } = await s3.stream({
    operation: "GetObject",
    method: "GET",
    url: s3ObjectUrl(s3, bucket, key),
  });
  let bytes = 0;
  for await (const chunk of body as AsyncIterable<Uint8Array>) bytes += chunk.length;
  return { transferMs: performance.now() - started, bytes };
}

const result =
  mode === "raw"
    ? await raw(first, Number(second), third)
    : mode === "handler"
      ? await handler(first, second, Number(third))
      : await transfer(first, second);
// The handler writes its access log and metrics (EMF, on stdout) after answering: the result line comes last.
await new Promise((written) => setImmediate(written));
process.stdout.write(`${JSON.stringify(result)}\n`);
