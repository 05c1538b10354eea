import { App, Duration, Size, Stack } from "aws-cdk-lib";
import { Template } from "aws-cdk-lib/assertions";
import { InlineCode, Function as LambdaFunction, Runtime } from "aws-cdk-lib/aws-lambda";
import { Queue } from "aws-cdk-lib/aws-sqs";
import { describe, expect, it } from "vitest";
import { InferenceApi, type InferenceApiProps } from "../../lib/inference-api.ts";
import { MaasAlarms, type MaasAlarmsProps } from "../../lib/maas-alarms.ts";
import { readMaasContext } from "../../lib/maas-context.ts";
import { MaasDashboard, type MaasDashboardProps } from "../../lib/maas-dashboard.ts";
import { MaasFunction } from "../../lib/maas-function.ts";
import { MaasServiceStack, type MaasServiceStackProps } from "../../lib/service-stack.ts";
import { MaasStatefulStack } from "../../lib/stateful-stack.ts";
import { maasStacks, ROOT, testApp } from "./support.ts";
import { render } from "./template-helpers.ts";

const MiB = 1024 * 1024;
const ENTRY = `${ROOT}/test/infra/fixtures/echo-handler.ts`;

function service(
  props: Omit<MaasServiceStackProps, "models" | "registry" | "queues" | "jobs">,
): MaasServiceStack {
  const app = testApp();
  const stateful = new MaasStatefulStack(app, "State");
  return new MaasServiceStack(app, "Service", {
    ...props,
    models: stateful.models,
    registry: stateful.registry,
    queues: stateful.queues,
    jobs: stateful.jobs,
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
      "preloadModels: 'Iris/1' is not a model name (1-64 lower-case letters, digits, '-', '_' or '.', starting with a letter or digit)",
    );
  });

  it("rejects a preloaded model name the service would refuse to register: one starting with '-' or '.'", () => {
    for (const name of ["-iris", ".iris"]) {
      expect(() => service({ provisionedConcurrency: 1, preloadModels: [name] })).toThrow(
        `preloadModels: '${name}' is not a model name`,
      );
    }
  });

  it("rejects a register timeout the queue's visibility timeout does not cover six times", () => {
    expect(() => service({ registerTimeout: Duration.minutes(15).plus(Duration.seconds(1)) })).toThrow(
      "the register queue's visibility timeout (5400 s) must be at least 6 times the register function's timeout (901 s)",
    );
  });

  it("rejects an optimize timeout the queue's visibility timeout does not cover six times", () => {
    expect(() => service({ optimizeTimeout: Duration.minutes(16) })).toThrow(
      "the optimize queue's visibility timeout (5400 s) must be at least 6 times the optimize function's timeout (960 s)",
    );
  });

  it("rejects an optimize concurrency an SQS event source cannot have", () => {
    expect(() => service({ optimizeMaxConcurrency: 1 })).toThrow(
      "optimizeMaxConcurrency must be an integer from 2 to 1000 (SQS event source maximum concurrency), got 1",
    );
  });

  it("rejects a jobs concurrency an SQS event source cannot have", () => {
    expect(() => service({ jobsMaxConcurrency: 1001 })).toThrow(
      "jobsMaxConcurrency must be an integer from 2 to 1000 (SQS event source maximum concurrency), got 1001",
    );
  });

  it("rejects jobs worker memory outside Lambda's range", () => {
    expect(() => service({ jobsMemoryMb: 12_288 })).toThrow(
      "memorySize must be an integer from 128 to 10240 MB, got 12288",
    );
  });

  it("rejects a register timeout too short to publish archives for SageMaker", () => {
    expect(() => service({ registerTimeout: Duration.minutes(2), sagemaker: {} })).toThrow(
      "registerTimeout (120 s) must be at least 300 s with SageMaker: registration streams each large model's archive to the endpoint's model prefix",
    );
  });

  it("rejects memory outside Lambda's range", () => {
    expect(() => service({ inferenceMemoryMb: 20_000 })).toThrow(
      "memorySize must be an integer from 128 to 10240 MB, got 20000",
    );
  });
});

describe("ModelEndpoint rejects settings SageMaker would refuse, from context", () => {
  const synth = (context: Record<string, unknown>) => () =>
    maasStacks({ context: { sagemaker: true, ...context } });

  it("rejects a string that is not an instance type", () => {
    expect(synth({ sagemakerInstanceType: "g5.xlarge" })).toThrow(
      "SageMaker instanceType 'g5.xlarge' is not a SageMaker instance type (ml.<family>.<size>, e.g. ml.g5.xlarge)",
    );
  });

  it("rejects Inferentia, which the serving container cannot use", () => {
    expect(synth({ sagemakerInstanceType: "ml.inf2.xlarge" })).toThrow(
      "SageMaker instanceType 'ml.inf2.xlarge': Inferentia and Trainium need a Neuron build of the serving container; use a GPU (ml.g*, ml.p*) or a CPU type",
    );
  });

  it("rejects a minimum above the maximum", () => {
    expect(
      synth({ sagemakerMinInstanceCount: 3, sagemakerInstanceCount: 3, sagemakerMaxInstanceCount: 2 }),
    ).toThrow("SageMaker minInstanceCount (3) must not exceed maxInstanceCount (2)");
  });

  it("rejects an initial count outside the scaling range", () => {
    expect(synth({ sagemakerInstanceCount: 5, sagemakerMaxInstanceCount: 4 })).toThrow(
      "SageMaker initialInstanceCount (5) must be from minInstanceCount (1) to maxInstanceCount (4)",
    );
  });

  it("rejects zero instances: a real-time endpoint cannot scale to zero", () => {
    expect(synth({ sagemakerMinInstanceCount: 0 })).toThrow(
      "SageMaker minInstanceCount must be a positive integer, got 0",
    );
  });

  it("rejects a container startup check SageMaker does not allow", () => {
    const app = testApp();
    const stateful = new MaasStatefulStack(app, "State");
    expect(
      () =>
        new MaasServiceStack(app, "Service", {
          models: stateful.models,
          registry: stateful.registry,
          queues: stateful.queues,
          jobs: stateful.jobs,
          sagemaker: { containerStartupTimeout: Duration.hours(2) },
        }),
    ).toThrow("SageMaker containerStartupTimeout must be from 60 to 3600 s, got 7200 s");
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
  const alarms = (props: Partial<MaasAlarmsProps>) => {
    const { api: restApi } = api({});
    const stack = Stack.of(restApi);
    return new MaasAlarms(stack, "Alarms", {
      deadLetterQueues: {},
      api: restApi,
      inference: inlineFunction(stack, "Fn"),
      ...props,
    });
  };

  it("rejects an alarm address that is not an email address", () => {
    expect(() => alarms({ alarmEmail: "ops.example.com" })).toThrow(
      "alarmEmail 'ops.example.com' is not an email address",
    );
  });

  it("rejects a 5xx rate threshold that is not a percentage", () => {
    expect(() => alarms({ apiErrorRateThreshold: 0 })).toThrow(
      "apiErrorRateThreshold must be a percentage above 0 and at most 100, got 0",
    );
    expect(() => alarms({ apiErrorRateThreshold: 150 })).toThrow(
      "apiErrorRateThreshold must be a percentage above 0 and at most 100, got 150",
    );
  });

  it("rejects a request latency threshold of zero", () => {
    expect(() => alarms({ requestLatencyThreshold: Duration.millis(0) })).toThrow(
      "requestLatencyThreshold must be positive",
    );
  });

  it("reads its thresholds from context, and refuses a value that is not a number", () => {
    expect(() => service({ apiErrorRateThreshold: 101 })).toThrow(
      "apiErrorRateThreshold must be a percentage above 0 and at most 100, got 101",
    );
    const app = testApp({ context: { requestLatencyAlarmMs: "slow" } });
    expect(() => readMaasContext(app.node)).toThrow(/^invalid context: requestLatencyAlarmMs: /);
  });
});

describe("MaasDashboard", () => {
  const dashboard = (props: Partial<MaasDashboardProps>) => {
    const { api: restApi } = api({});
    const stack = Stack.of(restApi);
    return new MaasDashboard(stack, "Dashboard", {
      functions: { Fn: inlineFunction(stack, "Fn") },
      queues: {
        Work: { queue: new Queue(stack, "Queue"), deadLetterQueue: new Queue(stack, "DeadLetters") },
      },
      api: restApi,
      ...props,
    });
  };

  it("rejects a period that is not a whole number of minutes", () => {
    expect(() => dashboard({ period: Duration.seconds(90) })).toThrow(
      "period must be a whole number of minutes, got 90 s",
    );
  });

  it("rejects a percentile CloudWatch would not understand", () => {
    expect(() => dashboard({ percentiles: ["p50", "median"] })).toThrow(
      "percentiles: 'median' is not a percentile statistic (p50, p99, p99.9)",
    );
    expect(() => dashboard({ percentiles: [] })).toThrow("percentiles must name at least one percentile");
  });

  it("graphs the percentiles it is given instead of p50, p90 and p99", () => {
    const stack = Stack.of(dashboard({ percentiles: ["p95"] }));
    const [resource] = Object.values(Template.fromStack(stack).findResources("AWS::CloudWatch::Dashboard"));
    const body = render(resource?.Properties.DashboardBody);
    expect(body).toContain(`MetricName=\\"RequestLatency\\"', 'p95', 300)`);
    expect(body).not.toMatch(/'p(50|90|99)'/);
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

  it("reads asynchronous inference's retention, worker memory and concurrency", () => {
    expect(read({ asyncRetentionDays: "3", jobsMemoryMb: "8192", jobsMaxConcurrency: 4 })).toMatchObject({
      asyncRetentionDays: 3,
      jobsMemoryMb: 8192,
      jobsMaxConcurrency: 4,
    });
    expect(() => read({ asyncRetentionDays: "a week" })).toThrow(/^invalid context: asyncRetentionDays: /);
  });

  it("rejects an unknown architecture, naming the key", () => {
    expect(() => read({ architecture: "amd64" })).toThrow(/^invalid context: architecture: /);
  });

  it("rejects a number that is not one, naming the key", () => {
    expect(() => read({ quotaLimit: "lots" })).toThrow(/^invalid context: quotaLimit: /);
  });

  it("leaves SageMaker off unless asked, and reads its settings when it is on", () => {
    expect(read({}).sagemaker).toBe(false);
    expect(
      read({ sagemaker: "true", sagemakerInstanceType: "ml.g6.xlarge", sagemakerMaxInstanceCount: "3" }),
    ).toMatchObject({ sagemaker: true, sagemakerInstanceType: "ml.g6.xlarge", sagemakerMaxInstanceCount: 3 });
  });

  it("rejects SageMaker settings without sagemaker=true, naming the key", () => {
    expect(() => read({ sagemakerInstanceType: "ml.g5.xlarge" })).toThrow(
      "invalid context: sagemakerInstanceType: needs sagemaker=true",
    );
  });

  it("rejects a sagemaker flag that is not a boolean", () => {
    expect(() => read({ sagemaker: "yes" })).toThrow(/^invalid context: sagemaker: /);
  });
});
