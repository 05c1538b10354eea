/**
 * Sagemaker-target versions through the local stack: registration publishes the model archive under
 * the endpoint's model prefix, the inference function invokes the SageMaker runtime stand-in with the
 * real SDK client, and the stand-in drives the GPU container server (on CPU) by its multi-model
 * contract.
 */
import { join } from "node:path";
import { DeleteObjectCommand, HeadObjectCommand } from "@aws-sdk/client-s3";
import {
  InvokeEndpointCommand,
  ModelError,
  SageMakerRuntimeClient,
  ValidationError,
} from "@aws-sdk/client-sagemaker-runtime";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { targetModelFor } from "#aws/sagemaker/layout.ts";
import { SageMakerRunner } from "#aws/sagemaker/runner.ts";
import type { ModelVersion, ServableVersion } from "#core/model.ts";
import { isServable } from "#core/registry/registry.ts";
import { type LocalSageMaker, startLocalSageMaker } from "../../local/sagemaker-runtime.ts";
import type { LocalStack } from "../../local/stack.ts";
import { buildMlpModel } from "../../models/mlp.ts";
import { ElemType, encodeModel, floatTensor } from "../../models/onnx-builder.ts";
import { buildDatatypeZooModel } from "../../models/zoo.ts";
import { startTestStack, stopTestStack } from "../support/local-stack.ts";

const API_KEY = "local-inference-key";
const ADMIN_KEY = "local-admin-key";
const MLP = buildMlpModel({ layers: [16, 32, 32, 4], seed: 11, name: "gpu_mlp" });
const ROWS = Array.from({ length: 5 }, (_, row) =>
  Array.from({ length: 16 }, (_, i) => Math.sin(row * 16 + i)),
);

interface V2Output {
  name: string;
  datatype: string;
  shape: number[];
  data: unknown[];
}

let dataDir: string;
let stack: LocalStack;

function servable(record: ModelVersion): ServableVersion {
  if (!isServable(record))
    throw new Error(`${record.name} v${record.version} did not register: ${record.reason}`);
  return record;
}

function infer(path: string, body: unknown): Promise<Response> {
  return fetch(`${stack.url}${path}`, {
    method: "POST",
    headers: { "x-api-key": API_KEY, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

async function directRun(bytes: Uint8Array, rows: number[][]): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(bytes);
  try {
    const input = new ort.Tensor("float32", Float32Array.from(rows.flat()), [rows.length, rows[0]!.length]);
    const { output } = await session.run({ input });
    return output!.data as Float32Array;
  } finally {
    await session.release();
  }
}

/** out = table[indices]: an index past the table fails inside the model server, not in validation. */
function lookupModel(): Uint8Array {
  return encodeModel({
    graphName: "lookup",
    inputs: [{ name: "indices", elemType: ElemType.INT64, dims: ["batch"] }],
    outputs: [{ name: "rows", elemType: ElemType.FLOAT, dims: ["batch", 2] }],
    initializers: [floatTensor("table", [3, 2], Float32Array.of(0, 1, 2, 3, 4, 5))],
    nodes: [
      { opType: "Gather", inputs: ["table", "indices"], outputs: ["rows"], attributes: { axis: { int: 0 } } },
    ],
  });
}

beforeAll(async () => {
  ({ stack, dataDir } = await startTestStack("sagemaker-target", {
    apiKey: API_KEY,
    adminKey: ADMIN_KEY,
    demo: false,
    lambdaMaxModelBytes: 1024 * 1024,
  }));
});

afterAll(() => stopTestStack(stack, dataDir));

describe("a sagemaker-target version", () => {
  let version: ServableVersion;

  beforeAll(async () => {
    version = servable(await stack.publish("gpu-mlp", 1, MLP, { manifest: { target: "sagemaker" } }));
  });

  it("is registered for SageMaker with its archive under the endpoint's model prefix", async () => {
    expect(version.target).toBe("sagemaker");
    const head = await stack.emulators.s3Client().send(
      new HeadObjectCommand({
        Bucket: stack.bucket,
        Key: `${stack.sagemaker.modelPrefix}${targetModelFor(version.artifact.sha256)}`,
      }),
    );
    expect(head.ContentLength).toBeGreaterThan(0);
  });

  it("answers on the V2 route with x-maas-backend: sagemaker and the outputs of a direct onnxruntime run", async () => {
    const response = await infer("/v2/models/gpu-mlp/versions/1/infer", {
      id: "req-1",
      inputs: [{ name: "input", datatype: "FP32", shape: [ROWS.length, 16], data: ROWS.flat() }],
    });

    const text = await response.text();
    expect(response.status, text).toBe(200);
    expect(response.headers.get("x-maas-backend")).toBe("sagemaker");
    expect(response.headers.get("x-maas-model-version")).toBe("1");
    // The endpoint runs the original upload's archive, whatever variants the optimizer measured.
    expect(response.headers.get("x-maas-variant")).toBe("original");
    const body = JSON.parse(text) as {
      model_name: string;
      model_version: string;
      id: string;
      outputs: V2Output[];
    };
    expect(body).toMatchObject({ model_name: "gpu-mlp", model_version: "1", id: "req-1" });
    expect(body.outputs).toHaveLength(1);
    expect(body.outputs[0]).toMatchObject({ name: "output", datatype: "FP32", shape: [ROWS.length, 4] });
    expect(Float32Array.from(body.outputs[0]!.data as number[])).toEqual(await directRun(MLP, ROWS));
  });

  it("names the original in its metadata, and the admin route will choose no other variant for it", async () => {
    const metadata = await fetch(`${stack.url}/v2/models/gpu-mlp/versions/1`, {
      headers: { "x-api-key": API_KEY },
    });
    const choice = await fetch(`${stack.url}/admin/models/gpu-mlp/versions/1/variant`, {
      method: "PUT",
      headers: { "x-api-key": ADMIN_KEY, "content-type": "application/json" },
      body: JSON.stringify({ kind: "fp16" }),
    });

    expect(((await metadata.json()) as { parameters: unknown }).parameters).toEqual({ variant: "original" });
    expect(choice.status).toBe(409);
    expect(await choice.json()).toEqual({
      error: expect.stringMatching(/served by SageMaker, whose endpoint serves the original upload/),
    });
  });

  it("is served by the container through SageMaker's multi-model load, once", async () => {
    await infer("/v2/models/gpu-mlp/infer", {
      inputs: [{ name: "input", datatype: "FP32", shape: [1, 16], data: ROWS[0] }],
    });

    const loaded = stack.sagemaker.container.models().filter((model) => model.key.startsWith("mme:"));
    expect(loaded.filter((model) => model.pinned)).toHaveLength(loaded.length);
    expect(loaded.length).toBeGreaterThanOrEqual(1);
  });

  it("gives concurrent callers their own rows when the container batches them", async () => {
    const responses = await Promise.all(
      ROWS.map((row) =>
        infer("/v2/models/gpu-mlp/infer", {
          inputs: [{ name: "input", datatype: "FP32", shape: [1, 16], data: row }],
        }),
      ),
    );

    const expected = await directRun(MLP, ROWS);
    for (const [i, response] of responses.entries()) {
      expect(response.status).toBe(200);
      const body = (await response.json()) as { outputs: V2Output[] };
      expect(Float32Array.from(body.outputs[0]!.data as number[])).toEqual(expected.slice(i * 4, i * 4 + 4));
    }
  });
});

describe("routing and errors through SageMaker", () => {
  it("sends a model over the Lambda size threshold to SageMaker without a manifest", async () => {
    const large = buildMlpModel({ layers: [256, 1024, 4], seed: 3, name: "large" });
    expect(large.byteLength).toBeGreaterThan(1024 * 1024);

    const record = servable(await stack.publish("large-mlp", 1, large));
    const response = await infer("/v2/models/large-mlp/infer", {
      inputs: [{ name: "input", datatype: "FP32", shape: [1, 256], data: new Array(256).fill(0.5) }],
    });

    expect(record.target).toBe("sagemaker");
    expect(response.status).toBe(200);
    expect(response.headers.get("x-maas-backend")).toBe("sagemaker");
  });

  it("keeps lambda-target versions out of the endpoint's model prefix", async () => {
    const record = servable(
      await stack.publish("small-mlp", 1, buildMlpModel({ layers: [3, 4, 2], seed: 5 })),
    );

    const head = stack.emulators.s3Client().send(
      new HeadObjectCommand({
        Bucket: stack.bucket,
        Key: `${stack.sagemaker.modelPrefix}${targetModelFor(record.artifact.sha256)}`,
      }),
    );

    expect(record.target).toBe("lambda");
    await expect(head).rejects.toMatchObject({ $metadata: { httpStatusCode: 404 } });
  });

  it("carries every V2 datatype through SageMaker exactly as the Lambda backend does", async () => {
    const zoo = buildDatatypeZooModel();
    await stack.publish("zoo-gpu", 1, zoo, { manifest: { target: "sagemaker" } });
    await stack.publish("zoo-cpu", 1, zoo, { manifest: { target: "lambda" } });
    const values: Record<string, unknown[]> = {
      BOOL: [true, false],
      UINT8: [0, 255],
      UINT16: [0, 65535],
      UINT32: [0, 4294967295],
      UINT64: [JSON.rawJSON("18446744073709551615"), 0],
      INT8: [-128, 127],
      INT16: [-32768, 32767],
      INT32: [-2147483648, 2147483647],
      INT64: [JSON.rawJSON("9007199254740993"), -5],
      FP16: [1.5, 65504],
      FP32: [0.1, "NaN"],
      FP64: [5e-324, "-Infinity"],
      BYTES: ["héllo", ""],
    };
    const inputs = Object.entries(values).map(([datatype, data]) => ({
      name: `in_${datatype.toLowerCase()}`,
      datatype,
      shape: [1, 2],
      data,
    }));
    const outputs = inputs.map((input) => ({ name: input.name.replace("in_", "out_") }));
    const ask = async (model: string) => {
      const response = await fetch(`${stack.url}/v2/models/${model}/infer`, {
        method: "POST",
        headers: { "x-api-key": API_KEY, "content-type": "application/json" },
        body: JSON.stringify({ inputs, outputs }),
      });
      return {
        status: response.status,
        backend: response.headers.get("x-maas-backend"),
        text: await response.text(),
      };
    };

    const [gpu, cpu] = await Promise.all([ask("zoo-gpu"), ask("zoo-cpu")]);

    expect(gpu.status, gpu.text).toBe(200);
    expect([gpu.backend, cpu.backend]).toEqual(["sagemaker", "lambda"]);
    expect(gpu.text.replace('"model_name":"zoo-gpu"', "")).toBe(
      cpu.text.replace('"model_name":"zoo-cpu"', ""),
    );
    expect(gpu.text).toContain("9007199254740993");
    expect(gpu.text).toContain("18446744073709551615");
  });

  it("returns the model server's reason as a 400 when the model rejects the inputs", async () => {
    await stack.publish("lookup", 1, lookupModel(), { manifest: { target: "sagemaker" } });

    const response = await infer("/v2/models/lookup/infer", {
      inputs: [{ name: "indices", datatype: "INT64", shape: [2], data: [0, 7] }],
    });

    expect(response.status).toBe(400);
    const { error } = (await response.json()) as { error: string };
    expect(error).toMatch(/^the model rejected the inputs: .*(out of (data )?bounds|must be within)/);
  });

  it("answers the same 400 when the same model runs inside the function", async () => {
    const record = await stack.publish("lookup-lambda", 1, lookupModel());

    const response = await infer("/v2/models/lookup-lambda/infer", {
      inputs: [{ name: "indices", datatype: "INT64", shape: [2], data: [0, 7] }],
    });

    expect(record.target).toBe("lambda");
    expect(response.status).toBe(400);
    const { error } = (await response.json()) as { error: string };
    expect(error).toMatch(/^the model rejected the inputs: .*(out of (data )?bounds|must be within)/);
  });

  it("answers 503 when the endpoint cannot find the model's data", async () => {
    const record = servable(
      await stack.publish("orphan", 1, buildMlpModel({ layers: [3, 5, 2], seed: 99 }), {
        manifest: { target: "sagemaker" },
      }),
    );
    await stack.emulators.s3Client().send(
      new DeleteObjectCommand({
        Bucket: stack.bucket,
        Key: `${stack.sagemaker.modelPrefix}${targetModelFor(record.artifact.sha256)}`,
      }),
    );

    const response = await infer("/v2/models/orphan/infer", {
      inputs: [{ name: "input", datatype: "FP32", shape: [1, 3], data: [1, 2, 3] }],
    });

    expect(response.status).toBe(503);
    expect(JSON.stringify(await response.json())).not.toContain("s3");
  });
});

describe("a single-model endpoint (GPU instances take no custom multi-model container)", () => {
  let single: LocalSageMaker;
  let client: SageMakerRuntimeClient;

  beforeAll(async () => {
    const { region, credentials, s3Endpoint } = stack.emulators;
    const s3 = { region, credentials, endpoint: s3Endpoint, forcePathStyle: true };
    single = await startLocalSageMaker({
      dataDir: join(dataDir, "single-model"),
      s3,
      bucket: stack.bucket,
      endpointName: "maas-gpu-single",
      containerEnv: {
        MAAS_MODEL_DIRS: join(dataDir, "single-model", "opt-ml-model"),
        MAAS_MODEL_S3_URI: `s3://${stack.bucket}/${stack.sagemaker.modelPrefix}`,
      },
    });
    client = new SageMakerRuntimeClient({ endpoint: single.url, region, credentials, maxAttempts: 1 });
  });

  afterAll(async () => {
    client?.destroy();
    await single?.close();
  });

  it("serves a registered version named in CustomAttributes, fetched from the model prefix on first use", async () => {
    const version = servable((await stack.registry.getVersion("gpu-mlp", 1))!);
    const runner = new SageMakerRunner({ client, endpointName: "maas-gpu-single", mode: "single-model" });
    const input = {
      name: "input",
      type: "float32" as const,
      dims: [2, 16],
      data: Float32Array.from(ROWS.slice(0, 2).flat()),
    };

    const [output] = await runner.run(version, [input], ["output"]);

    expect(output!.data).toEqual(await directRun(MLP, ROWS.slice(0, 2)));
    expect(single.container.models().map((model) => model.key)).toEqual([
      `target:${targetModelFor(version.artifact.sha256)}`,
    ]);
  });
});

describe("multi-model loading under memory pressure", () => {
  it("unloads the least recently used model when the container answers 507, as SageMaker does", async () => {
    const small = servable((await stack.registry.getVersion("gpu-mlp", 1))!);
    const large = servable((await stack.registry.getVersion("large-mlp", 1))!);
    const { region, credentials, s3Endpoint } = stack.emulators;
    const tight = await startLocalSageMaker({
      dataDir: join(dataDir, "tight"),
      s3: { region, credentials, endpoint: s3Endpoint },
      bucket: stack.bucket,
      endpointName: "maas-gpu-tight",
      // Room for the large model or the small one, never both.
      containerEnv: {
        MAAS_MEMORY_BUDGET_BYTES: String(large.artifact.bytes + 100),
        MAAS_MODEL_MEMORY_FACTOR: "1",
      },
    });
    const client = new SageMakerRuntimeClient({ endpoint: tight.url, region, credentials, maxAttempts: 1 });
    const invoke = (version: ServableVersion, width: number) =>
      client.send(
        new InvokeEndpointCommand({
          EndpointName: "maas-gpu-tight",
          TargetModel: targetModelFor(version.artifact.sha256),
          ContentType: "application/json",
          Body: new TextEncoder().encode(
            JSON.stringify({
              inputs: [
                { name: "input", datatype: "FP32", shape: [1, width], data: new Array(width).fill(0.25) },
              ],
            }),
          ),
        }),
      );
    try {
      await invoke(small, 16);
      await invoke(large, 256);
      const afterLarge = tight.container.models().length;
      await invoke(small, 16);

      expect(afterLarge).toBe(1);
      expect(tight.container.models()).toHaveLength(1);
      expect(tight.container.models()[0]!.bytes).toBeLessThan(large.artifact.bytes);
    } finally {
      client.destroy();
      await tight.close();
    }
  });
});

describe("the SageMaker runtime stand-in, through the real SDK", () => {
  let client: SageMakerRuntimeClient;

  beforeAll(() => {
    client = new SageMakerRuntimeClient({
      endpoint: stack.sagemaker.url,
      region: "us-east-1",
      credentials: { accessKeyId: "local", secretAccessKey: "local" },
      maxAttempts: 1,
    });
  });

  afterAll(() => {
    client.destroy();
  });

  it("answers an unknown endpoint with a ValidationError the SDK recognizes", async () => {
    const call = client.send(
      new InvokeEndpointCommand({
        EndpointName: "nope",
        Body: new TextEncoder().encode("{}"),
        ContentType: "application/json",
      }),
    );

    await expect(call).rejects.toBeInstanceOf(ValidationError);
  });

  it("answers a container error with a ModelError carrying the original status and message", async () => {
    const record = servable(await stack.publish("gpu-mlp-2", 1, MLP, { manifest: { target: "sagemaker" } }));

    const error = await client
      .send(
        new InvokeEndpointCommand({
          EndpointName: stack.sagemaker.endpointName,
          TargetModel: targetModelFor(record.artifact.sha256),
          ContentType: "application/json",
          Body: new TextEncoder().encode(
            JSON.stringify({ inputs: [{ name: "wrong", datatype: "FP32", shape: [1], data: [1] }] }),
          ),
        }),
      )
      .catch((caught: unknown) => caught);

    expect(error).toBeInstanceOf(ModelError);
    expect((error as ModelError).OriginalStatusCode).toBe(400);
    expect(JSON.parse((error as ModelError).OriginalMessage!)).toMatchObject({
      error: expect.stringContaining("wrong"),
    });
    expect((error as ModelError).$metadata.httpStatusCode).toBe(424);
  });

  it("reports the invoked production variant on success", async () => {
    const record = servable(await stack.publish("gpu-mlp-3", 1, MLP, { manifest: { target: "sagemaker" } }));

    const response = await client.send(
      new InvokeEndpointCommand({
        EndpointName: stack.sagemaker.endpointName,
        TargetModel: targetModelFor(record.artifact.sha256),
        ContentType: "application/json",
        Body: new TextEncoder().encode(
          JSON.stringify({ inputs: [{ name: "input", datatype: "FP32", shape: [1, 16], data: ROWS[1] }] }),
        ),
      }),
    );

    expect(response.InvokedProductionVariant).toBe("AllTraffic");
    expect(response.ContentType).toBe("application/json");
  });
});
