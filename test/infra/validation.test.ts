import { App, Duration, Size, Stack } from "aws-cdk-lib";
import { InlineCode, Function as LambdaFunction, Runtime } from "aws-cdk-lib/aws-lambda";
import { describe, expect, it } from "vitest";
import { InferenceApi, type InferenceApiProps } from "../../lib/inference-api.ts";
import { MaasAlarms } from "../../lib/maas-alarms.ts";
import { readMaasContext } from "../../lib/maas-context.ts";
import { MaasFunction } from "../../lib/maas-function.ts";
import { MaasServiceStack, type MaasServiceStackProps } from "../../lib/service-stack.ts";
import { MaasStatefulStack } from "../../lib/stateful-stack.ts";
import { ROOT, testApp } from "./support.ts";

const MiB = 1024 * 1024;
const ENTRY = `${ROOT}/test/infra/fixtures/echo-handler.ts`;

function service(props: Omit<MaasServiceStackProps, "models" | "registry" | "queues">): MaasServiceStack {
  const app = testApp();
  const stateful = new MaasStatefulStack(app, "State");
  return new MaasServiceStack(app, "Service", {
    ...props,
    models: stateful.models,
    registry: stateful.registry,
    queues: stateful.queues,
  });
}

function inlineFunction(stack: Stack, id: string): LambdaFunction {
  return new LambdaFunction(stack, id, {
    runtime: Runtime.NODEJS_22_X,
    handler: "index.handler",
    code: new InlineCode("exports.handler = async () => ({})"),
  });
}

function api(props: Partial<InferenceApiProps>): InferenceApi {
  const stack = new Stack(new App(), "Api");
  return new InferenceApi(stack, "Api", {
    inference: inlineFunction(stack, "Inference"),
    admin: inlineFunction(stack, "Admin"),
    ...props,
  });
}

describe("MaasServiceStack rejects settings that cannot work together", () => {
  it("rejects a Lambda model limit above the upload limit", () => {
    expect(() => service({ lambdaMaxModelBytes: 600 * MiB, maxModelBytes: 500 * MiB })).toThrow(
      `lambdaMaxModelBytes (${600 * MiB}) must not exceed maxModelBytes (${500 * MiB})`,
    );
  });

  it("rejects a Lambda model limit the artifact cache cannot hold", () => {
    expect(() => service({ ephemeralStorageMb: 512, lambdaMaxModelBytes: 512 * MiB })).toThrow(
      `lambdaMaxModelBytes (${512 * MiB}) must fit the inference artifact cache: 80% of ephemeralStorageMb (${Math.floor(512 * MiB * 0.8)} bytes)`,
    );
  });

  it("rejects an upload limit a single S3 copy cannot carry", () => {
    expect(() => service({ maxModelBytes: 5121 * MiB })).toThrow(
      `maxModelBytes (${5121 * MiB}) must be at most ${5120 * MiB}: registration copies each model with one S3 CopyObject (5 GiB at most)`,
    );
  });

  it("rejects a fractional byte limit", () => {
    expect(() => service({ maxModelBytes: 1.5 })).toThrow(
      "maxModelBytes must be a positive integer, got 1.5",
    );
  });

  it("rejects negative provisioned concurrency", () => {
    expect(() => service({ provisionedConcurrency: -1 })).toThrow(
      "provisionedConcurrency must be a non-negative integer, got -1",
    );
  });

  it("rejects preloaded models without provisioned concurrency", () => {
    expect(() => service({ preloadModels: ["iris"] })).toThrow(
      "preloadModels needs provisionedConcurrency > 0: only provisioned environments load models before the first request",
    );
  });

  it("rejects a preloaded model name that no upload could have", () => {
    expect(() => service({ provisionedConcurrency: 1, preloadModels: ["Iris/1"] })).toThrow(
      "preloadModels: 'Iris/1' is not a model name (lower-case letters, digits, '-', '_', '.', at most 64)",
    );
  });

  it("rejects a register timeout the queue's visibility timeout does not cover six times", () => {
    expect(() => service({ registerTimeout: Duration.minutes(15).plus(Duration.seconds(1)) })).toThrow(
      "the register queue's visibility timeout (5400 s) must be at least 6 times the register function's timeout (901 s)",
    );
  });

  it("rejects memory outside Lambda's range", () => {
    expect(() => service({ inferenceMemoryMb: 20_000 })).toThrow(
      "memorySize must be an integer from 128 to 10240 MB, got 20000",
    );
  });
});

describe("InferenceApi rejects invalid throttling, quota and CORS", () => {
  it("rejects a zero rate", () => {
    expect(() => api({ throttle: { rateLimit: 0, burstLimit: 10 } })).toThrow(
      "throttle.rateLimit must be a positive number, got 0",
    );
  });

  it("rejects a fractional burst", () => {
    expect(() => api({ throttle: { rateLimit: 10, burstLimit: 1.5 } })).toThrow(
      "throttle.burstLimit must be a positive integer, got 1.5",
    );
  });

  it("rejects an empty quota", () => {
    expect(() => api({ quota: { limit: 0 } })).toThrow("quota.limit must be a positive integer, got 0");
  });

  it("rejects '*' combined with named origins", () => {
    expect(() => api({ corsOrigins: ["*", "https://a.example.com"] })).toThrow(
      "corsOrigins: '*' allows every origin and cannot be combined with others",
    );
  });

  it("rejects an origin with a path", () => {
    expect(() => api({ corsOrigins: ["https://a.example.com/app"] })).toThrow(
      "corsOrigins: 'https://a.example.com/app' is not an origin (scheme://host[:port], no path)",
    );
  });

  it("rejects a stage name API Gateway would refuse", () => {
    expect(() => api({ stageName: "my stage" })).toThrow(
      "stageName must be letters, digits and underscores, got 'my stage'",
    );
  });
});

describe("MaasAlarms", () => {
  it("rejects an alarm address that is not an email address", () => {
    const { api: restApi } = api({});
    const stack = Stack.of(restApi);
    expect(
      () =>
        new MaasAlarms(stack, "Alarms", {
          deadLetterQueues: {},
          api: restApi,
          inference: inlineFunction(stack, "Fn"),
          alarmEmail: "ops.example.com",
        }),
    ).toThrow("alarmEmail 'ops.example.com' is not an email address");
  });
});

describe("MaasFunction rejects invalid settings", () => {
  const fn = (props: Partial<ConstructorParameters<typeof MaasFunction>[2]>) =>
    new MaasFunction(new Stack(testApp(), "Fn"), "Fn", { entry: ENTRY, ...props });

  it("rejects memory below Lambda's minimum", () => {
    expect(() => fn({ memorySize: 64 })).toThrow(
      "memorySize must be an integer from 128 to 10240 MB, got 64",
    );
  });

  it("rejects /tmp below Lambda's minimum", () => {
    expect(() => fn({ ephemeralStorageSize: Size.mebibytes(256) })).toThrow(
      "ephemeralStorageSize must be from 512 to 10240 MiB, got 256",
    );
  });

  it("rejects Docker bundling when onnxruntime-node must be copied from this machine", () => {
    expect(() => fn({ bundling: { forceDockerBundling: true } })).toThrow(
      "withOnnxRuntime copies onnxruntime-node from this machine's node_modules and cannot run inside Docker bundling (forceDockerBundling)",
    );
  });
});

describe("context", () => {
  const read = (context: Record<string, unknown>) => readMaasContext(new App({ context }).node);

  it("reads numbers, lists and flags given on the command line as strings", () => {
    expect(
      read({
        inferenceMemoryMb: "4096",
        corsOrigins: "https://a.example.com, https://b.example.com",
        preloadModels: '["iris","mlp"]',
        apiGatewayCloudWatchRole: "false",
      }),
    ).toMatchObject({
      architecture: "arm64",
      inferenceMemoryMb: 4096,
      corsOrigins: ["https://a.example.com", "https://b.example.com"],
      preloadModels: ["iris", "mlp"],
      apiGatewayCloudWatchRole: false,
    });
  });

  it("rejects an unknown architecture, naming the key", () => {
    expect(() => read({ architecture: "amd64" })).toThrow(/^invalid context: architecture: /);
  });

  it("rejects a number that is not one, naming the key", () => {
    expect(() => read({ quotaLimit: "lots" })).toThrow(/^invalid context: quotaLimit: /);
  });
});
