import { DeleteObjectCommand, ListObjectsV2Command, PutObjectCommand } from "@aws-sdk/client-s3";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ModelVersion, ServableVersion } from "#core/model.ts";
import { isServable } from "#core/registry/registry.ts";
import type { LocalStack } from "../../local/stack.ts";
import { buildIrisModel, IRIS_LABELS } from "../../models/iris.ts";
import { buildMlpModel } from "../../models/mlp.ts";
import { buildDatatypeZooModel, buildFixedShapeModel } from "../../models/zoo.ts";
import { startTestStack, stopTestStack } from "../support/local-stack.ts";

const API_KEY = "local-inference-key";
const ADMIN_KEY = "local-admin-key";
const IRIS_BATCH = [
  [5.1, 3.5, 1.4, 0.2],
  [6.7, 3.0, 5.2, 2.3],
  [5.9, 3.0, 4.2, 1.5],
];

let dataDir: string | undefined;
let stack: LocalStack;

/** Starts on the file's data directory: a second start is a restart on the same state. */
async function start(): Promise<LocalStack> {
  let started: LocalStack;
  ({ stack: started, dataDir } = await startTestStack("local-stack", {
    apiKey: API_KEY,
    adminKey: ADMIN_KEY,
    ...(dataDir === undefined ? {} : { dataDir }),
  }));
  return started;
}

async function seed(name: string, version: number, bytes: Uint8Array): Promise<ServableVersion> {
  const record = await stack.publish(name, version, bytes);
  if (!isServable(record)) throw new Error(`${name} v${version} did not register: ${record.reason}`);
  return record;
}

function api(path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`${stack.url}${path}`, {
    ...init,
    headers: { "x-api-key": API_KEY, "content-type": "application/json", ...init.headers },
  });
}

function post(path: string, body: string): Promise<Response> {
  return api(path, { method: "POST", body });
}

function irisRequest(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    inputs: [{ name: "features", shape: [IRIS_BATCH.length, 4], datatype: "FP32", data: IRIS_BATCH.flat() }],
    ...extra,
  });
}

interface V2Output {
  name: string;
  datatype: string;
  shape: number[];
  data: unknown[];
}

interface V2Response {
  model_name: string;
  model_version: string;
  id?: string;
  outputs: V2Output[];
}

async function okJson<T>(response: Response): Promise<T> {
  const text = await response.text();
  expect(response.status, text).toBe(200);
  return JSON.parse(text) as T;
}

function output(response: V2Response, name: string): V2Output {
  const found = response.outputs.find((candidate) => candidate.name === name);
  if (found === undefined) throw new Error(`no output '${name}' in ${JSON.stringify(response)}`);
  return found;
}

async function expectIrisServes(): Promise<void> {
  const body = await okJson<V2Response>(await post("/v2/models/iris/infer", irisRequest()));
  expect(output(body, "label").data).toHaveLength(IRIS_BATCH.length);
}

/** Every zoo input with values at the edges of each datatype; `data` may hold raw JSON numbers. */
function zooInputs(): { name: string; datatype: string; shape: number[]; data: unknown[] }[] {
  const raw = (digits: string) => JSON.rawJSON(digits);
  const values: Record<string, unknown[]> = {
    BOOL: [true, false, true],
    UINT8: [0, 255, 7],
    UINT16: [0, 65535, 300],
    UINT32: [0, 4294967295, 70000],
    UINT64: [0, raw("18446744073709551615"), raw("9007199254740993")],
    INT8: [-128, 127, 0],
    INT16: [-32768, 32767, 1],
    INT32: [-2147483648, 2147483647, 5],
    INT64: [raw("-9223372036854775808"), raw("9223372036854775807"), raw("9007199254740993")],
    FP16: [1.5, -0.25, 65504],
    FP32: [0.1, -3.25, "Infinity"],
    FP64: [0.1, -1e300, 5e-324],
    BYTES: ["hello", "", "ünïcødé ✓"],
  };
  return Object.entries(values).map(([datatype, data]) => ({
    name: `in_${datatype.toLowerCase()}`,
    datatype,
    shape: [1, data.length],
    data,
  }));
}

function zooRequest(change: (inputs: ReturnType<typeof zooInputs>) => void = () => {}): string {
  const inputs = zooInputs();
  change(inputs);
  return JSON.stringify({ inputs });
}

/** Keeps integers beyond 2^53 exact, as a V2 client that cares about INT64 must. */
function parseExact(text: string): unknown {
  return JSON.parse(text, (_key, value, context?: { source?: string }) =>
    typeof value === "number" && !Number.isSafeInteger(value) && /^-?\d+$/.test(context?.source ?? "")
      ? BigInt(context?.source as string)
      : value,
  );
}

beforeAll(async () => {
  stack = await start();
  await seed("zoo", 1, buildDatatypeZooModel());
  await seed("fixed", 1, buildFixedShapeModel());
  await seed("mlp", 1, buildMlpModel({ layers: [4, 8, 2], seed: 1 }));
});

afterAll(() => stopTestStack(stack, dataDir));

describe("local stack: iris over HTTP", () => {
  it("answers with exactly the outputs of a direct onnxruntime run of the same model", async () => {
    const session = await ort.InferenceSession.create(buildIrisModel());
    const direct = await session.run({
      features: new ort.Tensor("float32", Float32Array.from(IRIS_BATCH.flat()), [IRIS_BATCH.length, 4]),
    });
    await session.release();

    const response = await post("/v2/models/iris/infer", irisRequest({ id: "req-42" }));
    const body = await okJson<V2Response>(response);

    expect(response.headers.get("x-maas-backend")).toBe("lambda");
    expect(response.headers.get("x-maas-model-version")).toBe("1");
    // Whichever the optimizer selected by now (its benchmark decides): one of the version's own.
    const record = await stack.registry.getVersionConsistent("iris", 1);
    expect(["original", ...(record?.variants.map((variant) => variant.kind) ?? [])]).toContain(
      response.headers.get("x-maas-variant"),
    );
    expect(body).toMatchObject({ model_name: "iris", model_version: "1", id: "req-42" });
    const probabilities = output(body, "probabilities");
    expect(probabilities).toMatchObject({ datatype: "FP32", shape: [3, 3] });
    expect(Float32Array.from(probabilities.data as number[])).toEqual(direct.probabilities!.data);
    const label = output(body, "label");
    expect(label).toMatchObject({ datatype: "BYTES", shape: [3] });
    expect(label.data).toEqual(direct.label!.data);
    const rows = [0, 1, 2].map((row) => (probabilities.data as number[]).slice(row * 3, row * 3 + 3));
    expect(label.data).toEqual(rows.map((row) => IRIS_LABELS[row.indexOf(Math.max(...row))]));
    expect(label.data).toEqual(["setosa", "virginica", "versicolor"]);
  });

  it("returns only the outputs the request selects", async () => {
    const body = await okJson<V2Response>(
      await post("/v2/models/iris/infer", irisRequest({ outputs: [{ name: "label" }] })),
    );

    expect(body.outputs.map((selected) => selected.name)).toEqual(["label"]);
  });

  it("answers 50 concurrent requests, all with identical outputs", async () => {
    const responses = await Promise.all(
      Array.from({ length: 50 }, () => post("/v2/models/iris/infer", irisRequest())),
    );
    const bodies = await Promise.all(responses.map((response) => okJson<V2Response>(response)));

    expect(new Set(bodies.map((body) => JSON.stringify(body.outputs))).size).toBe(1);
  });
});

describe("local stack: V2 routes", () => {
  it("serves server metadata, and liveness and readiness without an API key", async () => {
    const metadata = await okJson<{ name: string; version: string; extensions: string[] }>(await api("/v2"));
    const live = await fetch(`${stack.url}/v2/health/live`);
    const ready = await fetch(`${stack.url}/v2/health/ready`);

    expect(metadata).toEqual({
      name: "serverless-maas",
      version: expect.any(String),
      extensions: ["model_repository", "binary_tensor_data", "statistics"],
    });
    expect(await okJson(live)).toEqual({ live: true });
    expect(await okJson(ready)).toEqual({ ready: true });
  });

  it("lists iris among the models", async () => {
    const body = await okJson<{ models: { name: string; versions: string[] }[] }>(await api("/v2/models"));

    expect(body.models).toContainEqual({ name: "iris", versions: ["1"] });
  });

  it("describes iris with and without a version, symbolic dims as -1", async () => {
    const expected = {
      name: "iris",
      versions: ["1"],
      platform: "onnxruntime_onnx",
      inputs: [{ name: "features", datatype: "FP32", shape: [-1, 4] }],
      outputs: [
        { name: "probabilities", datatype: "FP32", shape: [-1, 3] },
        { name: "label", datatype: "BYTES", shape: [-1] },
      ],
      parameters: { variant: expect.any(String) },
    };

    expect(await okJson(await api("/v2/models/iris"))).toEqual(expected);
    expect(await okJson(await api("/v2/models/iris/versions/1"))).toEqual(expected);
  });

  it("reports iris ready with and without a version", async () => {
    expect(await okJson(await api("/v2/models/iris/ready"))).toEqual({
      name: "iris",
      version: "1",
      ready: true,
    });
    expect(await okJson(await api("/v2/models/iris/versions/1/ready"))).toEqual({
      name: "iris",
      version: "1",
      ready: true,
    });
  });

  it("infers on an explicit version", async () => {
    const response = await post("/v2/models/iris/versions/1/infer", irisRequest());

    expect((await okJson<V2Response>(response)).model_version).toBe("1");
    expect(response.headers.get("x-maas-model-version")).toBe("1");
  });

  it("serves the newest ready version unversioned, the default alias once set, and named aliases", async () => {
    const mlpRequest = JSON.stringify({
      inputs: [{ name: "input", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, 4] }],
    });
    const served = async (path: string) => {
      const response = await post(path, mlpRequest);
      const body = await okJson<V2Response>(response);
      expect(response.headers.get("x-maas-model-version")).toBe(body.model_version);
      return body.model_version;
    };
    expect(await served("/v2/models/mlp/infer")).toBe("1");

    const v2 = await seed("mlp", 2, buildMlpModel({ layers: [4, 8, 2], seed: 2 }));
    await stack.registry.createVersion({ ...v2, version: 3, status: "registering" });
    stack.inference.registry.clear();
    const newestReady = await served("/v2/models/mlp/infer");
    const third = await post("/v2/models/mlp/versions/3/infer", mlpRequest);

    await stack.registry.setAlias("mlp", "default", 1);
    await stack.registry.setAlias("mlp", "stable", 2);
    stack.inference.registry.clear();
    const viaDefault = await served("/v2/models/mlp/infer");
    const viaStable = await served("/v2/models/mlp/versions/stable/infer");
    const metadataViaDefault = await okJson<{ versions: string[] }>(await api("/v2/models/mlp"));

    expect(newestReady).toBe("2");
    expect(third.status).toBe(503);
    expect(await third.json()).toEqual({ error: expect.stringMatching(/version 3 is registering/) });
    expect(viaDefault).toBe("1");
    expect(viaStable).toBe("2");
    expect(metadataViaDefault.versions).toEqual(["1", "2"]);
  });
});

describe("local stack: the variant that answers", () => {
  const request = JSON.stringify({
    inputs: [{ name: "input", shape: [2, 4], datatype: "FP32", data: [1, -2, 3, -4, 0.5, 0.25, -1, 8] }],
  });
  const admin = (path: string, init: RequestInit = {}) =>
    fetch(`${stack.url}/admin${path}`, {
      ...init,
      headers: { "x-api-key": ADMIN_KEY, "content-type": "application/json", ...init.headers },
    });
  const choose = (kind: string) =>
    admin("/models/chooser/versions/1/variant", { method: "PUT", body: JSON.stringify({ kind }) });
  /** What the next request sees, without waiting out the registry cache's TTL. */
  const answered = async () => {
    stack.inference.registry.clear();
    const response = await post("/v2/models/chooser/versions/1/infer", request);
    const body = await okJson<V2Response>(response);
    const metadata = await okJson<{ parameters: { variant: string } }>(await api("/v2/models/chooser"));
    return { variant: response.headers.get("x-maas-variant"), body, metadata: metadata.parameters.variant };
  };
  let optimized: ModelVersion;

  beforeAll(async () => {
    await seed("chooser", 1, buildMlpModel({ layers: [4, 8, 2], seed: 3, name: "chooser" }));
    const deadline = Date.now() + 60_000;
    for (;;) {
      const record = await stack.registry.getVersionConsistent("chooser", 1);
      if (record?.optimizedAt !== undefined) {
        optimized = record;
        break;
      }
      if (Date.now() > deadline) throw new Error(`chooser v1 is still ${record?.status} after 60 s`);
      await new Promise((wake) => setTimeout(wake, 50));
    }
  });

  it("serves an operator's choice of variant, says so in x-maas-variant and the metadata, and goes back", async () => {
    const built = optimized.variants.find((variant) => variant.kind === "graph-extended");
    expect(built?.artifact, JSON.stringify(optimized.variants)).toBeDefined();

    const chosen = await choose("graph-extended");
    const chosenRecord = await okJson<{ serving: string; variantChoice: { kind: string; by: string } }>(
      chosen,
    );
    const onVariant = await answered();
    const back = await choose("original");
    const backRecord = await okJson<{ serving: string }>(back);
    const onOriginal = await answered();

    expect(chosenRecord).toMatchObject({
      serving: "graph-extended",
      variantChoice: { kind: "graph-extended", by: "operator" },
    });
    expect(onVariant).toMatchObject({ variant: "graph-extended", metadata: "graph-extended" });
    expect(stack.inference.sessions.has(built!.artifact!.sha256)).toBe(true);
    expect(backRecord.serving).toBe("original");
    expect(onOriginal).toMatchObject({ variant: "original", metadata: "original" });
    // A lossless variant: the same outputs either way.
    expect(output(onVariant.body, "output").data).toEqual(output(onOriginal.body, "output").data);
  });

  it("refuses a variant the version does not have with a 409, a bad body with a 400, and the inference key", async () => {
    const missing = await choose("int3");
    const bad = await admin("/models/chooser/versions/1/variant", {
      method: "PUT",
      body: '{"variant": "x"}',
    });
    const inferenceKey = await api("/admin/models/chooser/versions/1/variant", {
      method: "PUT",
      body: JSON.stringify({ kind: "original" }),
    });

    expect(missing.status).toBe(409);
    expect(await missing.json()).toEqual({
      error: expect.stringMatching(/has no variant 'int3'; its variants are: original/),
    });
    expect(bad.status).toBe(400);
    expect(inferenceKey.status).toBe(403);
    await inferenceKey.body?.cancel();
  });
});

describe("local stack: datatypes over HTTP", () => {
  it("round-trips every V2 datatype, keeping INT64 and UINT64 beyond 2^53 digit for digit", async () => {
    const response = await post("/v2/models/zoo/infer", zooRequest());
    const text = await response.text();

    expect(response.status, text).toBe(200);
    expect(text).toContain('"data":[0,18446744073709551615,9007199254740993]');
    expect(text).toContain('"data":[-9223372036854775808,9223372036854775807,9007199254740993]');
    const body = parseExact(text) as V2Response;
    const returned = Object.fromEntries(body.outputs.map((out) => [out.datatype, out]));
    expect(Object.keys(returned).sort()).toEqual(
      zooInputs()
        .map((input) => input.datatype)
        .sort(),
    );
    for (const out of body.outputs) expect(out.shape).toEqual([1, 3]);
    expect(returned.BOOL?.data).toEqual([true, false, true]);
    expect(returned.UINT8?.data).toEqual([0, 255, 7]);
    expect(returned.UINT16?.data).toEqual([0, 65535, 300]);
    expect(returned.UINT32?.data).toEqual([0, 4294967295, 70000]);
    expect(returned.UINT64?.data).toEqual([0, 18446744073709551615n, 9007199254740993n]);
    expect(returned.INT8?.data).toEqual([-128, 127, 0]);
    expect(returned.INT16?.data).toEqual([-32768, 32767, 1]);
    expect(returned.INT32?.data).toEqual([-2147483648, 2147483647, 5]);
    expect(returned.INT64?.data).toEqual([-9223372036854775808n, 9223372036854775807n, 9007199254740993n]);
    expect(returned.FP16?.data).toEqual([1.5, -0.25, 65504]);
    // FP32 is written in its short float32 form: 0.1, not 0.10000000149011612.
    expect(returned.FP32?.data).toEqual([0.1, -3.25, "Infinity"]);
    expect(returned.FP64?.data).toEqual([0.1, -1e300, 5e-324]);
    expect(returned.BYTES?.data).toEqual(["hello", "", "ünïcødé ✓"]);
    expect(body.outputs.map((out) => out.name)).toContain("out_fp16");
  });

  it("rounds FP16 values to the nearest half-precision number", async () => {
    const response = await post(
      "/v2/models/zoo/infer",
      zooRequest((inputs) => {
        inputs.find((input) => input.datatype === "FP16")!.data = [0.1, 65519, 1e-8];
      }),
    );
    const body = await okJson<V2Response>(response);

    // 0.1 -> 0.0999755859375 (0x2E66); 65519 still rounds down to the largest half; 1e-8 underflows to 0.
    expect(Float32Array.from(output(body, "out_fp16").data as number[])).toEqual(
      Float32Array.of(0.0999755859375, 65504, 0),
    );
  });
});

describe("local stack: caller errors", () => {
  const iris = (input: Record<string, unknown>) =>
    JSON.stringify({
      inputs: [{ name: "features", shape: [1, 4], datatype: "FP32", data: [5.1, 3.5, 1.4, 0.2], ...input }],
    });
  const cases: { name: string; request: () => Promise<Response>; status: number; message: RegExp }[] = [
    {
      name: "a tensor of the wrong shape",
      request: () => post("/v2/models/iris/infer", iris({ shape: [1, 3], data: [1, 2, 3] })),
      status: 400,
      message: /input 'features' has shape \[1, 3\] but the model expects \[batch, 4\]/,
    },
    {
      name: "a tensor of the wrong datatype",
      request: () => post("/v2/models/iris/infer", iris({ datatype: "FP64" })),
      status: 400,
      message: /input 'features' has datatype FP64 but the model expects FP32/,
    },
    {
      name: "a missing input",
      request: () =>
        post(
          "/v2/models/zoo/infer",
          zooRequest((inputs) => inputs.splice(0, 1)),
        ),
      status: 400,
      message: /missing input: in_bool/,
    },
    {
      name: "an unknown input",
      request: () =>
        post(
          "/v2/models/iris/infer",
          JSON.stringify({
            inputs: [
              { name: "features", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, 4] },
              { name: "colour", shape: [1], datatype: "BYTES", data: ["blue"] },
            ],
          }),
        ),
      status: 400,
      message: /unknown input 'colour'; the model's inputs are: features/,
    },
    {
      name: "a body that is not JSON",
      request: () => post("/v2/models/iris/infer", "{inputs: ["),
      status: 400,
      message: /request body is not valid JSON/,
    },
    {
      name: "an empty body",
      request: () => post("/v2/models/iris/infer", ""),
      status: 400,
      message: /request body is empty/,
    },
    {
      name: "an unknown model",
      request: () => post("/v2/models/nope/infer", iris({})),
      status: 404,
      message: /model 'nope' not found/,
    },
    {
      name: "an unknown version",
      request: () => post("/v2/models/iris/versions/7/infer", iris({})),
      status: 404,
      message: /model 'iris' has no version 7/,
    },
    {
      name: "an unknown alias",
      request: () => post("/v2/models/iris/versions/canary/infer", iris({})),
      status: 404,
      message: /model 'iris' has no version or alias 'canary'/,
    },
    {
      name: "a wrong method",
      request: () => api("/v2/models/iris/infer"),
      status: 405,
      message: /GET is not allowed on \/v2\/models\/iris\/infer; use POST/,
    },
    {
      name: "a string in FP32 data",
      request: () => post("/v2/models/iris/infer", iris({ data: [5.1, "abc", 1.4, 0.2] })),
      status: 400,
      message: /input 'features' element 1: expected a number .* for FP32, got the string "abc"/,
    },
    {
      name: "an INT8 out of range",
      request: () =>
        post(
          "/v2/models/zoo/infer",
          zooRequest((inputs) => {
            inputs.find((input) => input.datatype === "INT8")!.data = [-128, 128, 0];
          }),
        ),
      status: 400,
      message: /input 'in_int8' element 1: expected an integer in \[-128, 127\] for INT8, got number 128/,
    },
    {
      name: "a fixed-shape model given [1, 3]",
      request: () =>
        post(
          "/v2/models/fixed/infer",
          JSON.stringify({ inputs: [{ name: "x", shape: [1, 3], datatype: "FP32", data: [1, 2, 3] }] }),
        ),
      status: 400,
      message: /input 'x' has shape \[1, 3\] but the model expects \[2, 3\]/,
    },
  ];

  it.each(cases)("rejects $name with a $status naming the problem, and keeps serving", async (testCase) => {
    const response = await testCase.request();
    const body = await response.json();

    expect(response.status).toBe(testCase.status);
    expect(response.headers.get("content-type")).toMatch(/^application\/json/);
    expect(body).toEqual({ error: expect.stringMatching(testCase.message) });
    await expectIrisServes();
  });

  it("names the allowed method on a 405", async () => {
    const response = await api("/v2/models/iris/infer", { method: "PUT", body: "{}" });

    expect(response.status).toBe(405);
    expect(response.headers.get("allow")).toBe("POST");
  });

  it("refuses a request without an API key with API Gateway's 403", async () => {
    const response = await fetch(`${stack.url}/v2/models/iris/infer`, {
      method: "POST",
      body: irisRequest(),
    });

    expect(response.status).toBe(403);
    expect(await response.json()).toEqual({ message: "Forbidden" });
    await expectIrisServes();
  });

  it("refuses the inference key on the admin routes", async () => {
    const response = await api("/admin/models/iris/aliases");

    expect(response.status).toBe(403);
    expect(await response.json()).toEqual({ message: "Forbidden" });
    await expectIrisServes();
  });
});

describe("local stack: artifact integrity", () => {
  it("answers 503 naming the digest when a model's bytes no longer match its record and its upload is gone, and keeps serving others", async () => {
    // A model of its own: the session pool remembers a failed load by digest, for every model with these bytes.
    const original = buildMlpModel({ layers: [3, 3], seed: 7, name: "tampered" });
    const record = await seed("tampered", 1, original);
    // Same size, one byte changed: only the digest can tell.
    const tampered = Buffer.from(original);
    const docString = tampered.indexOf("Dense MLP");
    tampered[docString] = "d".charCodeAt(0);
    await stack.emulators
      .s3Client()
      .send(
        new PutObjectCommand({ Bucket: record.artifact.bucket, Key: record.artifact.key, Body: tampered }),
      );
    // With the upload there, the artifact would be rebuilt from it (test/reliability/artifact-recovery).
    await stack.emulators
      .s3Client()
      .send(new DeleteObjectCommand({ Bucket: record.artifact.bucket, Key: "models/tampered/1/model.onnx" }));
    const request = JSON.stringify({
      inputs: [{ name: "input", shape: [1, 3], datatype: "FP32", data: [1, 2, 3] }],
    });
    const fixedRequest = JSON.stringify({
      inputs: [{ name: "x", shape: [2, 3], datatype: "FP32", data: [1, 2, 3, 4, 5, 6] }],
    });

    const response = await post("/v2/models/tampered/infer", request);
    const body = (await response.json()) as { error: string };
    const again = await post("/v2/models/tampered/infer", request);

    expect(response.status).toBe(503);
    expect(body.error).toMatch(
      /cannot be served: its artifact \(sha256 [0-9a-f]{64}\) is missing or corrupt/,
    );
    expect(body.error).toContain(record.artifact.sha256);
    expect(body.error).not.toMatch(/\n\s+at /);
    expect(again.status).toBe(503);
    await expectIrisServes();
    const fixed = await okJson<V2Response>(await post("/v2/models/fixed/infer", fixedRequest));
    expect(output(fixed, "y").data).toEqual([2, 4, 6, 8, 10, 12]);
  });
});

describe("local stack: restart", () => {
  it("serves iris again from the same data directory without publishing a second copy", async () => {
    await stack.close();

    stack = await start();
    const listed = await okJson<{ models: { name: string; versions: string[] }[] }>(await api("/v2/models"));
    const metadata = await okJson<{ versions: string[] }>(await api("/v2/models/iris"));
    const objects = await stack.emulators
      .s3Client()
      .send(new ListObjectsV2Command({ Bucket: stack.bucket, Prefix: "models/iris/" }));

    expect(listed.models.find((model) => model.name === "iris")).toEqual({ name: "iris", versions: ["1"] });
    expect(metadata.versions).toEqual(["1"]);
    expect(objects.Contents?.map((object) => object.Key)).toEqual(["models/iris/1/model.onnx"]);
    await expectIrisServes();
    expect(listed.models.map((model) => model.name)).toEqual(expect.arrayContaining(["zoo", "fixed", "mlp"]));
  });
});
