import { Logger } from "@aws-lambda-powertools/logger";
import {
  InternalDependencyException,
  InternalFailure,
  InvokeEndpointCommand,
  type InvokeEndpointCommandInput,
  ModelError,
  ModelNotReadyException,
  SageMakerRuntimeClient,
  SageMakerRuntimeServiceException,
  ServiceUnavailable,
  ValidationError,
} from "@aws-sdk/client-sagemaker-runtime";
import { mockClient } from "aws-sdk-client-mock";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { errorResponse } from "#aws/lambda/api-gateway.ts";
import { LazySageMakerClient, SageMakerRunner, type SageMakerRunnerOptions } from "#aws/sagemaker/runner.ts";
import {
  BackendError,
  BackendTimeoutError,
  BackendUnavailableError,
  InvalidRequestError,
  MaasError,
  ModelInvocationError,
  ModelNotReadyError,
  PayloadTooLargeError,
  ThrottledError,
} from "#core/errors.ts";
import type { ServableVersion } from "#core/model.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import { rejectionOf } from "../support/rejection.ts";

const SHA = "ab".repeat(32);
const ENDPOINT = "maas-gpu";

const version: ServableVersion = {
  name: "big-mlp",
  version: 3,
  status: "ready",
  target: "sagemaker",
  artifact: { bucket: "maas-models", key: `artifacts/sha256/${SHA}.onnx`, sha256: SHA, bytes: 1234 },
  signature: {
    inputs: [{ name: "input", datatype: "FP32", shape: ["batch", 2] }],
    outputs: [
      { name: "output", datatype: "FP32", shape: ["batch", 2] },
      { name: "ids", datatype: "INT64", shape: ["batch"] },
    ],
  },
  variants: [],
  createdAt: "2026-01-01T00:00:00.000Z",
  updatedAt: "2026-01-01T00:00:00.000Z",
};

const input: NamedTensor = {
  name: "input",
  type: "float32",
  dims: [2, 2],
  data: Float32Array.of(1, 2, 3, 4),
};

const okBody = (outputs: unknown[]) => new TextEncoder().encode(JSON.stringify({ model_name: "x", outputs }));

const OUTPUTS = [
  { name: "ids", datatype: "INT64", shape: [2], data: [7, 9] },
  { name: "output", datatype: "FP32", shape: [2, 2], data: [0.5, 1.5, "NaN", -2] },
];

const meta = (httpStatusCode: number) => ({ httpStatusCode, attempts: 1, totalRetryDelay: 0 });

function sdkError(name: string, httpStatusCode: number, fault: "client" | "server" = "client") {
  return new SageMakerRuntimeServiceException({
    name,
    $fault: fault,
    $metadata: meta(httpStatusCode),
    message: `${name} happened`,
  });
}

function modelError(originalStatus: number, originalMessage: string, message?: string) {
  return new ModelError({
    $metadata: meta(424),
    message:
      message ??
      `Received client error (${originalStatus}) from primary with message "${originalMessage}". See logs.`,
    OriginalStatusCode: originalStatus,
    OriginalMessage: originalMessage,
  });
}

const sagemaker = mockClient(SageMakerRuntimeClient);
let sleeps: number[];

function runner(options: Partial<SageMakerRunnerOptions> = {}): SageMakerRunner {
  return new SageMakerRunner({
    client: new SageMakerRuntimeClient({ region: "us-east-1" }),
    endpointName: ENDPOINT,
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    random: () => 0.5,
    ...options,
  });
}

const failure = (promise: Promise<unknown>) => rejectionOf(promise, MaasError);

const sentInputs = () =>
  sagemaker
    .commandCalls(InvokeEndpointCommand)
    .map((call) => call.args[0].input as InvokeEndpointCommandInput);

beforeEach(() => {
  sagemaker.reset();
  sleeps = [];
});

afterEach(() => {
  sagemaker.reset();
});

describe("SageMakerRunner requests", () => {
  it("invokes the endpoint with the tensors as V2 binary data and the artifact's archive as TargetModel", async () => {
    sagemaker.on(InvokeEndpointCommand).resolves({ Body: okBody(OUTPUTS) as never });

    await runner().run(version, [input], ["output", "ids"]);

    const [sent] = sentInputs();
    expect(sent).toMatchObject({
      EndpointName: ENDPOINT,
      TargetModel: `${SHA}.tar.gz`,
      Accept: "application/vnd.sagemaker-triton.binary+json",
    });
    expect(sent?.CustomAttributes).toBeUndefined();
    const headerSize = /^application\/vnd\.sagemaker-triton\.binary\+json;json-header-size=(\d+)$/.exec(
      sent?.ContentType ?? "",
    )?.[1];
    const body = Buffer.from(sent!.Body as Uint8Array);
    expect(JSON.parse(body.toString("utf8", 0, Number(headerSize)))).toEqual({
      inputs: [{ name: "input", datatype: "FP32", shape: [2, 2], parameters: { binary_data_size: 16 } }],
      outputs: [
        { name: "output", parameters: { binary_data: true } },
        { name: "ids", parameters: { binary_data: true } },
      ],
    });
    const data = body.subarray(Number(headerSize));
    expect(Array.from(new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + 16)))).toEqual([
      1, 2, 3, 4,
    ]);
  });

  it("decodes binary outputs after the JSON header whose size the content type gives", async () => {
    const header = Buffer.from(
      JSON.stringify({
        model_name: "x",
        outputs: [
          { name: "ids", datatype: "INT64", shape: [2], parameters: { binary_data_size: 16 } },
          { name: "output", datatype: "FP32", shape: [2, 2], data: [0.5, 1.5, 2.5, -2] },
        ],
      }),
    );
    const body = Buffer.concat([header, Buffer.from(BigInt64Array.of(2n ** 62n + 1n, -9n).buffer)]);
    sagemaker.on(InvokeEndpointCommand).resolves({
      Body: body as never,
      ContentType: `application/vnd.sagemaker-triton.binary+json;json-header-size=${header.length}`,
    });

    const [output, ids] = await runner().run(version, [input], ["output", "ids"]);

    expect(Array.from(output!.data as Float32Array)).toEqual([0.5, 1.5, 2.5, -2]);
    expect(ids).toMatchObject({ type: "int64", dims: [2], data: BigInt64Array.of(2n ** 62n + 1n, -9n) });
  });

  it("names the model in CustomAttributes instead of TargetModel on a single-model endpoint", async () => {
    sagemaker.on(InvokeEndpointCommand).resolves({ Body: okBody(OUTPUTS) as never });

    await runner({ mode: "single-model" }).run(version, [input], ["output"]);

    const [sent] = sentInputs();
    expect(sent?.TargetModel).toBeUndefined();
    expect(sent?.CustomAttributes).toBe(`target-model=${SHA}.tar.gz`);
  });

  it("decodes the V2 response into tensors in the order the outputs were requested", async () => {
    sagemaker.on(InvokeEndpointCommand).resolves({ Body: okBody(OUTPUTS) as never });

    const tensors = await runner().run(version, [input], ["output", "ids"]);

    expect(tensors.map((tensor) => tensor.name)).toEqual(["output", "ids"]);
    expect(tensors[0]).toMatchObject({ type: "float32", dims: [2, 2] });
    expect(Array.from(tensors[0]!.data as Float32Array)).toEqual([0.5, 1.5, Number.NaN, -2]);
    expect(tensors[1]).toMatchObject({ type: "int64", dims: [2], data: BigInt64Array.of(7n, 9n) });
  });

  it("keeps int64 outputs beyond 2^53 exact", async () => {
    const big = "9007199254740993";
    const body = `{"model_name":"x","outputs":[{"name":"ids","datatype":"INT64","shape":[1],"data":[${big}]}]}`;
    sagemaker.on(InvokeEndpointCommand).resolves({ Body: new TextEncoder().encode(body) as never });

    const [ids] = await runner().run(version, [input], ["ids"]);

    expect((ids!.data as BigInt64Array)[0]).toBe(BigInt(big));
  });

  it("refuses a request over SageMaker's 6 MB payload limit without calling it", async () => {
    const large: NamedTensor = {
      name: "input",
      type: "float32",
      dims: [1_000_000, 2],
      data: new Float32Array(2_000_000).fill(0.123456),
    };

    const error = await failure(runner().run(version, [large], ["output"]));

    expect(error).toBeInstanceOf(PayloadTooLargeError);
    expect(error.status).toBe(413);
    expect(sentInputs()).toHaveLength(0);
  });

  it("reports a response that is not a V2 response as a 502", async () => {
    sagemaker
      .on(InvokeEndpointCommand)
      .resolves({ Body: new TextEncoder().encode("<html>oops</html>") as never });

    const error = await failure(runner().run(version, [input], ["output"]));

    expect(error).toBeInstanceOf(BackendError);
    expect(error.status).toBe(502);
  });

  it("reports a response without a requested output as a 502", async () => {
    sagemaker.on(InvokeEndpointCommand).resolves({ Body: okBody([OUTPUTS[0]]) as never });

    const error = await failure(runner().run(version, [input], ["output"]));

    expect(error).toBeInstanceOf(BackendError);
  });
});

describe("SageMakerRunner with a LazySageMakerClient", () => {
  it("creates the client on the first call, once, with the configuration it was given", async () => {
    sagemaker.on(InvokeEndpointCommand).resolves({ Body: okBody(OUTPUTS) as never });
    const lazy = new LazySageMakerClient({ region: "eu-west-1", maxAttempts: 1 });
    const lazyRunner = runner({ client: lazy });

    await lazyRunner.run(version, [input], ["output"]);
    await lazyRunner.run(version, [input], ["ids"]);
    const client = await lazy.get();

    expect(sentInputs()).toHaveLength(2);
    expect(await lazy.get()).toBe(client);
    expect(client).toBeInstanceOf(SageMakerRuntimeClient);
    expect(await client.config.region()).toBe("eu-west-1");
  });
});

describe("SageMakerRunner error mapping", () => {
  it("maps a ModelError to a 502 carrying the container's own message, without retrying", async () => {
    sagemaker
      .on(InvokeEndpointCommand)
      .rejects(modelError(500, JSON.stringify({ error: "inference failed: CUDA out of memory" })));

    const error = await failure(runner().run(version, [input], ["output"]));

    expect(error).toBeInstanceOf(ModelInvocationError);
    expect(error.status).toBe(502);
    expect(error.code).toBe("model_error");
    expect(error.message).toBe("model 'big-mlp' version 3 failed: inference failed: CUDA out of memory");
    expect(sentInputs()).toHaveLength(1);
  });

  it("keeps a non-JSON container message as sent", async () => {
    sagemaker.on(InvokeEndpointCommand).rejects(modelError(500, "segfault in custom op"));

    const error = await failure(runner().run(version, [input], ["output"]));

    expect(error.message).toContain("segfault in custom op");
  });

  it("maps a ModelError for inputs the container rejected (400) to a 400", async () => {
    sagemaker
      .on(InvokeEndpointCommand)
      .rejects(modelError(400, JSON.stringify({ error: "input 'input': data has 3 elements" })));

    const error = await failure(runner().run(version, [input], ["output"]));

    expect(error).toBeInstanceOf(InvalidRequestError);
    expect(error.message).toBe("the model rejected the inputs: input 'input': data has 3 elements");
  });

  it("maps SageMaker's container timeout (a ModelError) to a 504", async () => {
    sagemaker
      .on(InvokeEndpointCommand)
      .rejects(
        modelError(
          0,
          "",
          'Received server error (0) from primary with message "Your invocation timed out while waiting for a response from container primary."',
        ),
      );

    const error = await failure(runner().run(version, [input], ["output"]));

    expect(error).toBeInstanceOf(BackendTimeoutError);
    expect(error.status).toBe(504);
    expect(sentInputs()).toHaveLength(1);
  });

  it("retries throttling with jittered, growing waits, then answers 429 with Retry-After", async () => {
    sagemaker.on(InvokeEndpointCommand).rejects(sdkError("ThrottlingException", 400));

    const error = await failure(runner({ maxAttempts: 3 }).run(version, [input], ["output"]));

    expect(error).toBeInstanceOf(ThrottledError);
    expect(error.status).toBe(429);
    expect((error as ThrottledError).retryAfterSeconds).toBeGreaterThan(0);
    expect(sentInputs()).toHaveLength(3);
    // random() = 0.5 of min(cap, base * 2^(n-1)): 50 then 100 ms
    expect(sleeps).toEqual([50, 100]);
  });

  it("treats any HTTP 429 as throttling", async () => {
    sagemaker.on(InvokeEndpointCommand).rejects(sdkError("TooManyRequests", 429));

    const error = await failure(runner({ maxAttempts: 2 }).run(version, [input], ["output"]));

    expect(error).toBeInstanceOf(ThrottledError);
  });

  it("succeeds when a retry after throttling gets through", async () => {
    sagemaker
      .on(InvokeEndpointCommand)
      .rejectsOnce(sdkError("ThrottlingException", 400))
      .resolves({ Body: okBody(OUTPUTS) as never });

    const tensors = await runner().run(version, [input], ["output"]);

    expect(tensors[0]?.name).toBe("output");
    expect(sentInputs()).toHaveLength(2);
  });

  it("maps ServiceUnavailable to a 503 with Retry-After after retrying", async () => {
    sagemaker
      .on(InvokeEndpointCommand)
      .rejects(new ServiceUnavailable({ $metadata: meta(503), message: "Service Unavailable" }));

    const error = await failure(runner({ maxAttempts: 2 }).run(version, [input], ["output"]));

    expect(error).toBeInstanceOf(BackendUnavailableError);
    expect(error.status).toBe(503);
    expect(sentInputs()).toHaveLength(2);
  });

  it("maps ModelNotReadyException (a multi-model endpoint still loading the model) to a 503 with Retry-After", async () => {
    sagemaker
      .on(InvokeEndpointCommand)
      .rejects(new ModelNotReadyException({ $metadata: meta(429), message: "Model is not ready" }));

    const error = await failure(runner({ maxAttempts: 2 }).run(version, [input], ["output"]));

    expect(error).toBeInstanceOf(BackendUnavailableError);
    expect(error.message).toContain("still loading");
    expect((error as BackendUnavailableError).retryAfterSeconds).toBe(5);
  });

  it("retries InternalFailure and InternalDependencyException, then answers 502", async () => {
    sagemaker
      .on(InvokeEndpointCommand)
      .rejectsOnce(new InternalFailure({ $metadata: meta(500), message: "internal" }))
      .rejects(new InternalDependencyException({ $metadata: meta(530), message: "dependency" }));

    const error = await failure(runner({ maxAttempts: 3 }).run(version, [input], ["output"]));

    expect(error).toBeInstanceOf(BackendError);
    expect(error.status).toBe(502);
    expect(error.message).not.toContain("dependency");
    expect(sentInputs()).toHaveLength(3);
  });

  it("maps ValidationError (no such endpoint, missing model data) to a 503 without retrying or leaking it", async () => {
    sagemaker.on(InvokeEndpointCommand).rejects(
      new ValidationError({
        $metadata: meta(400),
        message: "Endpoint maas-gpu of account 1234 not found.",
      }),
    );

    const error = await failure(runner().run(version, [input], ["output"]));

    expect(error).toBeInstanceOf(ModelNotReadyError);
    expect(error.status).toBe(503);
    expect(error.message).not.toContain("1234");
    expect(sentInputs()).toHaveLength(1);
  });

  it("maps an unexpected client error (access denied) to a 502 without retrying", async () => {
    sagemaker.on(InvokeEndpointCommand).rejects(sdkError("AccessDeniedException", 403));

    const error = await failure(runner().run(version, [input], ["output"]));

    expect(error).toBeInstanceOf(BackendError);
    expect(error.message).not.toContain("AccessDenied");
    expect(sentInputs()).toHaveLength(1);
  });

  it("retries a refused connection, then answers 503", async () => {
    sagemaker
      .on(InvokeEndpointCommand)
      .rejects(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }));

    const error = await failure(runner({ maxAttempts: 2 }).run(version, [input], ["output"]));

    expect(error).toBeInstanceOf(BackendUnavailableError);
    expect(sentInputs()).toHaveLength(2);
  });

  it("aborts an attempt past its timeout and answers 504", async () => {
    const signals: AbortSignal[] = [];
    const client = new SageMakerRuntimeClient({ region: "us-east-1" });
    sagemaker.on(InvokeEndpointCommand).callsFake(() => new Promise(() => undefined));
    const send = client.send.bind(client);
    client.send = ((command: never, options?: { abortSignal?: AbortSignal }) => {
      if (options?.abortSignal) signals.push(options.abortSignal);
      return send(command);
    }) as typeof client.send;

    const error = await failure(
      runner({ client, attemptTimeoutMs: 20, deadlineMs: 30, maxAttempts: 3 }).run(
        version,
        [input],
        ["output"],
      ),
    );

    expect(error).toBeInstanceOf(BackendTimeoutError);
    expect(error.status).toBe(504);
    expect(signals[0]?.aborted).toBe(true);
  });

  it("stops retrying when the deadline would pass during the wait", async () => {
    let clock = 0;
    sagemaker.on(InvokeEndpointCommand).callsFake(async () => {
      clock += 900;
      throw sdkError("ThrottlingException", 400);
    });

    const error = await failure(
      runner({ now: () => clock, deadlineMs: 960, maxAttempts: 5 }).run(version, [input], ["output"]),
    );

    expect(error).toBeInstanceOf(ThrottledError);
    expect(sentInputs()).toHaveLength(1);
  });
});

describe("errorResponse for backend errors", () => {
  const logger = new Logger({ logLevel: "SILENT" });

  it("gives a 429 a retry-after header in whole seconds", () => {
    const response = errorResponse(new ThrottledError("slow down", 0.2), logger);

    expect(response.statusCode).toBe(429);
    expect(response.headers).toMatchObject({ "retry-after": "1" });
    expect(JSON.parse(response.body)).toEqual({ error: "slow down" });
  });

  it("gives a 503 from the backend a retry-after header", () => {
    const response = errorResponse(new BackendUnavailableError("loading", 5), logger);

    expect(response.statusCode).toBe(503);
    expect(response.headers).toMatchObject({ "retry-after": "5" });
  });

  it("gives other errors no retry-after header", () => {
    const response = errorResponse(new BackendTimeoutError("late"), logger);

    expect(response.statusCode).toBe(504);
    expect(response.headers?.["retry-after"]).toBeUndefined();
  });
});
