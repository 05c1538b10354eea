/**
 * `npm run bench:binary`: a [1,3,224,224] FP32 image through the inference handler as JSON against the
 * same tensor with the V2 binary tensor data extension, in one run. API Gateway's binaryMediaTypes match
 * every type, so both bodies reach the function base64-encoded, and are sent so here. The
 * model (GlobalAveragePool, Flatten, MatMul, Add: 1000 logits) costs little to run, so that the wire
 * format dominates. Each form is an API Gateway event in and a response out (no HTTP), in this process,
 * in alternating rounds (ABAB) after a warm-up; the table gives the median of the rounds' p50 and p99.
 * Both forms must give the same logits, or it throws before measuring.
 *   BENCH_BINARY_ITERATIONS (default 200) per form per round, BENCH_BINARY_ROUNDS (default 4).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Logger } from "@aws-lambda-powertools/logger";
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from "aws-lambda";
import * as z from "zod/mini";
import { mulberry32 } from "#core/tensor/seeded-random.ts";
import { loadInferenceConfig } from "#lambdas/inference/config.ts";
import { createInferenceHandler, type ProxyHandler } from "#lambdas/inference/handler.ts";
import { createInferenceParts, defaultClients } from "#lambdas/inference/service.ts";
import { lambdaContext } from "../local/gateway.ts";
import { LOCAL_TABLE } from "../local/stack.ts";
import { uniform } from "../models/mlp.ts";
import { ElemType, encodeModel, floatTensor } from "../models/onnx-builder.ts";
import { optimizerIdle, startBenchStack } from "./bench-stack.ts";
import { bytesInferEvent } from "./events.ts";
import { formatMs, median, muteStdout, percentile, printTable } from "./stats.ts";

const ITERATIONS = Number(process.env.BENCH_BINARY_ITERATIONS ?? 200);
const ROUNDS = Number(process.env.BENCH_BINARY_ROUNDS ?? 4);
const WARMUP = Math.min(20, ITERATIONS);

const MODEL = "binary-bench";
const IMAGE_DIMS: readonly number[] = [1, 3, 224, 224];
const CLASSES = 1000;

type Form = "json" | "binary";
const FORMS: readonly Form[] = ["json", "binary"];

/** Cheap on purpose: a mean per channel, then a [3,1000] projection; the bytes of the tensor are the work. */
function buildModel(): Uint8Array {
  const random = mulberry32(7);
  return encodeModel({
    graphName: "binary_bench",
    docString:
      "GlobalAveragePool -> Flatten -> MatMul + Add: an image in, 1000 logits out, for the wire bench.",
    inputs: [{ name: "image", elemType: ElemType.FLOAT, dims: [...IMAGE_DIMS] }],
    outputs: [{ name: "logits", elemType: ElemType.FLOAT, dims: [1, CLASSES] }],
    initializers: [
      floatTensor("weight", [3, CLASSES], uniform(3 * CLASSES, 1, random)),
      floatTensor("bias", [CLASSES], uniform(CLASSES, 0.1, random)),
    ],
    nodes: [
      { opType: "GlobalAveragePool", inputs: ["image"], outputs: ["pooled"] },
      { opType: "Flatten", inputs: ["pooled"], outputs: ["flat"], attributes: { axis: { int: 1 } } },
      { opType: "MatMul", inputs: ["flat", "weight"], outputs: ["product"] },
      { opType: "Add", inputs: ["product", "bias"], outputs: ["logits"] },
    ],
  });
}

/** Deterministic, varied values: constant inputs can flatter some kernels. */
function imageValues(): Float32Array {
  const values = new Float32Array(IMAGE_DIMS.reduce((a, b) => a * b, 1));
  for (let i = 0; i < values.length; i++) values[i] = Math.sin(i * 0.37);
  return values;
}

interface RequestForm {
  readonly event: APIGatewayProxyEvent;
  /** The HTTP body as the client sends it, before API Gateway's base64. */
  readonly wireBytes: number;
}

/** JSON numbers of the float32 values (as numpy's `tolist()` writes them), so both forms carry one tensor. */
function jsonForm(image: Float32Array): RequestForm {
  const text = JSON.stringify({
    inputs: [{ name: "image", shape: IMAGE_DIMS, datatype: "FP32", data: Array.from(image) }],
  });
  const body = Buffer.from(text, "utf8");
  return {
    event: bytesInferEvent(MODEL, body, { "content-type": "application/json" }),
    wireBytes: body.byteLength,
  };
}

function binaryForm(image: Float32Array): RequestForm {
  const header = Buffer.from(
    JSON.stringify({
      inputs: [
        {
          name: "image",
          shape: IMAGE_DIMS,
          datatype: "FP32",
          parameters: { binary_data_size: image.byteLength },
        },
      ],
      parameters: { binary_data_output: true },
    }),
    "utf8",
  );
  const body = new Uint8Array(header.byteLength + image.byteLength);
  body.set(header);
  const data = new DataView(body.buffer, header.byteLength);
  for (let i = 0; i < image.length; i++) data.setFloat32(i * 4, image[i]!, true);
  return {
    event: bytesInferEvent(MODEL, body, {
      "content-type": "application/octet-stream",
      "Inference-Header-Content-Length": String(header.byteLength),
    }),
    wireBytes: body.byteLength,
  };
}

const outputSchema = z.object({
  name: z.string(),
  datatype: z.string(),
  shape: z.array(z.number()),
  data: z.optional(z.array(z.number())),
  parameters: z.optional(z.object({ binary_data_size: z.optional(z.number()) })),
});
const inferResponseSchema = z.object({ outputs: z.array(outputSchema) });

function responseBytes(result: APIGatewayProxyResult): Buffer {
  return Buffer.from(result.body, result.isBase64Encoded ? "base64" : "utf8");
}

function responseHeader(result: APIGatewayProxyResult, name: string): string | undefined {
  const entry = Object.entries(result.headers ?? {}).find(([key]) => key.toLowerCase() === name);
  return entry === undefined ? undefined : String(entry[1]);
}

/** The `logits` output of a JSON response. */
function jsonLogits(result: APIGatewayProxyResult): Float32Array {
  const { outputs } = inferResponseSchema.parse(JSON.parse(responseBytes(result).toString("utf8")));
  const logits = outputs.find((output) => output.name === "logits");
  if (logits?.data === undefined) throw new Error("the JSON response has no logits data");
  if (logits.datatype !== "FP32" || logits.shape.join() !== `1,${CLASSES}`)
    throw new Error(`the JSON response's logits are ${logits.datatype} [${logits.shape}]`);
  return Float32Array.from(logits.data, Math.fround);
}

/** The `logits` output of a binary response: JSON header, then each output's bytes in order. */
function binaryLogits(result: APIGatewayProxyResult): Float32Array {
  if (!result.isBase64Encoded) throw new Error("the binary response is not base64-encoded");
  const bytes = responseBytes(result);
  const headerLength = Number(responseHeader(result, "inference-header-content-length"));
  if (!Number.isInteger(headerLength) || headerLength <= 0 || headerLength > bytes.byteLength)
    throw new Error(`the binary response's inference-header-content-length is ${headerLength}`);
  const { outputs } = inferResponseSchema.parse(JSON.parse(bytes.subarray(0, headerLength).toString("utf8")));
  let offset = headerLength;
  for (const output of outputs) {
    const size = output.parameters?.binary_data_size;
    if (size === undefined) continue;
    if (output.name === "logits") {
      if (output.datatype !== "FP32" || size !== CLASSES * 4 || offset + size > bytes.byteLength)
        throw new Error(`the binary response's logits are ${output.datatype}, ${size} bytes at ${offset}`);
      const view = new DataView(bytes.buffer, bytes.byteOffset + offset, size);
      return Float32Array.from({ length: CLASSES }, (_, i) => view.getFloat32(i * 4, true));
    }
    offset += size;
  }
  throw new Error("the binary response has no binary logits");
}

async function call(handler: ProxyHandler, form: Form, request: RequestForm): Promise<APIGatewayProxyResult> {
  const result = await handler(request.event, lambdaContext(`check-${form}`, Date.now()));
  await new Promise((logged) => setImmediate(logged));
  if (result.statusCode !== 200)
    throw new Error(
      `the ${form} form answered ${result.statusCode}: ${responseBytes(result).toString("utf8")}`,
    );
  return result;
}

/** Both forms must give the same logits, to the bit; returns each form's response bytes on the wire. */
async function verify(
  handler: ProxyHandler,
  requests: Record<Form, RequestForm>,
): Promise<Record<Form, number>> {
  const json = await call(handler, "json", requests.json);
  const binary = await call(handler, "binary", requests.binary);
  const fromJson = jsonLogits(json);
  const fromBinary = binaryLogits(binary);
  const differ = fromJson.findIndex((value, i) => !Object.is(value, fromBinary[i]));
  if (differ !== -1)
    throw new Error(`logit ${differ} differs: JSON ${fromJson[differ]}, binary ${fromBinary[differ]}`);
  return { json: responseBytes(json).byteLength, binary: responseBytes(binary).byteLength };
}

/** `iterations` timed calls of one form, in ms. */
async function measure(handler: ProxyHandler, request: RequestForm, iterations: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < iterations; i++) {
    // Lambda hands the handler its context: building it is not the handler's time.
    const context = lambdaContext("bench", Date.now());
    const start = performance.now();
    const result = await handler(request.event, context);
    times.push(performance.now() - start);
    // The handler writes its log line after answering: let it finish outside the timing.
    await new Promise((logged) => setImmediate(logged));
    if (result.statusCode !== 200) throw new Error(`handler answered ${result.statusCode}: ${result.body}`);
  }
  return times;
}

/** Waits until the model's version 1 has been through the optimizer, whose runs would share our cores. */
async function main() {
  const { stack, close } = await startBenchStack("binary", { demo: false });
  const artifactDir = await mkdtemp(join(tmpdir(), "maas-binary-artifacts-"));
  try {
    await stack.publish(MODEL, 1, buildModel(), { manifest: { pinOriginal: true } });
    await optimizerIdle(stack, [MODEL]);

    // The function's own wiring, pointed at the emulators, with an artifact directory of its own.
    const { region, credentials, s3Endpoint, dynamoEndpoint } = stack.emulators;
    const env = { MAAS_REGISTRY_TABLE: LOCAL_TABLE, MAAS_ARTIFACT_DIR: artifactDir };
    const parts = createInferenceParts(
      loadInferenceConfig(env),
      defaultClients(
        {
          s3: { region, credentials, endpoint: s3Endpoint },
          dynamo: { region, credentials, endpoint: dynamoEndpoint },
        },
        env,
      ),
    );
    try {
      // Handler logs go nowhere, but are still formatted and written, as in Lambda.
      const logger = new Logger({ serviceName: "maas-inference", logLevel: "INFO" });
      const handler = createInferenceHandler(parts.service, logger);
      const image = imageValues();
      const requests: Record<Form, RequestForm> = { json: jsonForm(image), binary: binaryForm(image) };
      const rounds: Record<Form, { p50: number; p99: number }[]> = { json: [], binary: [] };
      const silence = muteStdout();
      let responseWire: Record<Form, number>;
      try {
        responseWire = await verify(handler, requests);
        for (const form of FORMS) await measure(handler, requests[form], WARMUP);
        for (let round = 0; round < ROUNDS; round++) {
          for (const form of FORMS) {
            const times = await measure(handler, requests[form], ITERATIONS);
            rounds[form].push({ p50: median(times), p99: percentile(times, 99) });
          }
        }
      } finally {
        silence();
      }

      const of = (form: Form, figure: "p50" | "p99") => median(rounds[form].map((round) => round[figure]));
      const ratio = of("json", "p50") / of("binary", "p50");
      console.log(
        `\n${MODEL}: image FP32 [${IMAGE_DIMS.join(",")}] -> logits FP32 [1,${CLASSES}], handler only (event in, response out), median of ${ROUNDS} alternating rounds × ${ITERATIONS} calls per form\n`,
      );
      printTable(
        [
          "form",
          "request bytes",
          "response bytes",
          "handler p50 ms",
          "handler p99 ms",
          "json / binary (p50)",
        ],
        FORMS.map((form) => [
          form,
          String(requests[form].wireBytes),
          String(responseWire[form]),
          formatMs(of(form, "p50")),
          formatMs(of(form, "p99")),
          form === "json" ? ratio.toFixed(2) : "1.00",
        ]),
      );
      console.log(
        `\nJSON takes ${ratio.toFixed(2)} × the binary form's time, for ${(requests.json.wireBytes / requests.binary.wireBytes).toFixed(2)} × its request bytes`,
      );
    } finally {
      await parts.sessions.close();
    }
  } finally {
    await close();
    await rm(artifactDir, { recursive: true, force: true });
  }
}

await main();
