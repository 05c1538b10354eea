import type { CfnResource } from "aws-cdk-lib";
import { Match, Template } from "aws-cdk-lib/assertions";
import { describe, expect, it } from "vitest";
import type { MaasFunction } from "../../lib/maas-function.ts";
import { maasStacks } from "./support.ts";
import { asArray, cdkPath, permissionsOf, render, type TemplateResource } from "./template-helpers.ts";

const MiB = 1024 * 1024;
const { service, stateful } = maasStacks();
const template = Template.fromStack(service);

const full = maasStacks({
  context: {
    architecture: "x86_64",
    inferenceMemoryMb: "4096",
    ephemeralStorageMb: 8192,
    provisionedConcurrency: 2,
    preloadModels: "iris,mlp",
    corsOrigins: '["https://app.example.com"]',
    throttleRateLimit: 50,
    throttleBurstLimit: 80,
    quotaLimit: 100000,
    quotaPeriod: "WEEK",
    alarmEmail: "ops@example.com",
    asyncRetentionDays: "3",
    jobsMemoryMb: 8192,
    jobsMaxConcurrency: "20",
  },
});
const fullTemplate = Template.fromStack(full.service);

const idOf = (construct: { node: { defaultChild?: unknown } }) =>
  service.getLogicalId(construct.node.defaultChild as CfnResource);
const functionProps = (fn: MaasFunction, from = template) =>
  (from.findResources("AWS::Lambda::Function") as Record<string, TemplateResource>)[
    (from === template ? service : full.service).getLogicalId(fn.node.defaultChild as CfnResource)
  ]?.Properties;

const variablesOf = (fn: MaasFunction, from = template): Record<string, unknown> =>
  (functionProps(fn, from)?.Environment as { Variables?: Record<string, unknown> } | undefined)?.Variables ??
  {};

describe("functions", () => {
  it("run Node.js 22 on arm64 with active tracing and their own log group, without loading source maps at start", () => {
    for (const fn of [
      service.inference,
      service.admin,
      service.register,
      service.optimize,
      service.jobsWorker,
    ]) {
      expect(functionProps(fn)).toMatchObject({
        Runtime: "nodejs22.x",
        Architectures: ["arm64"],
        Handler: "index.handler",
        TracingConfig: { Mode: "Active" },
        LoggingConfig: { LogGroup: { Ref: expect.stringMatching(/Logs/) } },
      });
      // A map is read when an error is logged (lambdas/aws/lambda/stack-map.ts): --enable-source-maps would load
      // every map at start-up, tens of ms of each cold start.
      expect(render(functionProps(fn)?.Environment)).not.toContain("enable-source-maps");
    }
  });

  it("sizes inference for onnxruntime and caches artifacts in 80% of its /tmp", () => {
    expect(functionProps(service.inference)).toMatchObject({
      MemorySize: 3008,
      EphemeralStorage: { Size: 4096 },
      Timeout: 60,
      Environment: {
        Variables: {
          MAAS_REGISTRY_TABLE: expect.anything(),
          MAAS_ARTIFACT_CACHE_BYTES: String(Math.floor(4096 * MiB * 0.8)),
        },
      },
    });
    expect(render(functionProps(service.inference)?.Environment)).not.toContain("MAAS_PRELOAD_MODELS");
  });

  it("gives inference asynchronous inference's table, queue and bucket, and the retention of the bucket's lifecycle rule", () => {
    const variables = variablesOf(service.inference);
    expect(render(variables.MAAS_JOBS_TABLE)).toMatch(/^<PublishOutputRefJobsTable\w+>$/);
    expect(variables.MAAS_JOBS_QUEUE_URL).toEqual({ Ref: idOf(service.jobsQueue.queue) });
    expect(render(variables.MAAS_ASYNC_BUCKET)).toMatch(/^<PublishOutputRefModelsBucket\w+>$/);
    expect(variables.MAAS_ASYNC_RETENTION_DAYS).toBe("7");
    const fullVariables = variablesOf(full.service.inference, fullTemplate);
    expect(fullVariables.MAAS_ASYNC_RETENTION_DAYS).toBe(String(full.stateful.models.jobRetentionDays));
    expect(full.stateful.models.jobRetentionDays).toBe(3);
  });

  it("gives register the queue, limits and /tmp room for the largest accepted model", () => {
    expect(functionProps(service.register)).toMatchObject({
      MemorySize: 3008,
      EphemeralStorage: { Size: 2048 + 512 },
      Timeout: 900,
      Environment: {
        Variables: {
          MAAS_REGISTRY_TABLE: expect.anything(),
          MAAS_OPTIMIZE_QUEUE_URL: expect.anything(),
          MAAS_MAX_MODEL_BYTES: String(2048 * MiB),
          MAAS_LAMBDA_MAX_MODEL_BYTES: String(512 * MiB),
          MAAS_WORK_DIR: "/tmp/maas-register",
        },
      },
    });
    expect(render(functionProps(service.register)?.Environment)).toContain("OptimizeQueue");
  });

  it("keeps admin small: no onnxruntime, default memory, the bucket for deletions", () => {
    expect(service.admin.withOnnxRuntime).toBe(false);
    expect(functionProps(service.admin)).toMatchObject({
      MemorySize: 512,
      EphemeralStorage: { Size: 512 },
      Timeout: 30,
      Environment: { Variables: { MAAS_REGISTRY_TABLE: expect.anything(), MAAS_BUCKET: expect.anything() } },
    });
  });

  it("keeps function logs for a month", () => {
    // Five functions', the API's access log and the console deployment handler's.
    template.resourceCountIs("AWS::Logs::LogGroup", 7);
    template.allResourcesProperties("AWS::Logs::LogGroup", { RetentionInDays: 30 });
  });

  it("gives no function role a managed policy", () => {
    const roles = Object.values(template.findResources("AWS::IAM::Role")) as TemplateResource[];
    const functionRoles = roles.filter((role) =>
      /Maas(Service)\/(Inference|Admin|Register|Optimize|Jobs)Role/.test(cdkPath(role)),
    );
    expect(functionRoles).toHaveLength(5);
    for (const role of functionRoles) expect(role.Properties.ManagedPolicyArns).toBeUndefined();
  });

  it("serves the API through the inference alias 'live', without provisioned concurrency by default", () => {
    template.hasResourceProperties("AWS::Lambda::Alias", {
      Name: "live",
      ProvisionedConcurrencyConfig: Match.absent(),
    });
  });

  it("applies context: architecture, memory, /tmp, provisioned concurrency and preloaded models", () => {
    expect(functionProps(full.service.inference, fullTemplate)).toMatchObject({
      Architectures: ["x86_64"],
      MemorySize: 4096,
      EphemeralStorage: { Size: 8192 },
      Environment: {
        Variables: expect.objectContaining({
          MAAS_ARTIFACT_CACHE_BYTES: String(Math.floor(8192 * MiB * 0.8)),
          MAAS_PRELOAD_MODELS: "iris,mlp",
          MAAS_CORS_ORIGINS: "https://app.example.com",
        }),
      },
    });
    fullTemplate.hasResourceProperties("AWS::Lambda::Alias", {
      Name: "live",
      ProvisionedConcurrencyConfig: { ProvisionedConcurrentExecutions: 2 },
    });
  });
});

const mappingsOf = (fn: MaasFunction, from = template) =>
  (Object.values(from.findResources("AWS::Lambda::EventSourceMapping")) as TemplateResource[]).filter(
    (mapping) =>
      render(mapping.Properties.FunctionName) ===
      `<${(from === template ? service : full.service).getLogicalId(fn.node.defaultChild as CfnResource)}>`,
  );
const mappingOf = (fn: MaasFunction) => mappingsOf(fn)[0];

describe("register event source", () => {
  it("polls the register queue in batches of 10 and reports failed items", () => {
    // Register's, optimize's and the optimize dead-letter queue's (optimize-dead-letter.test.ts), the jobs
    // queue's and the jobs dead-letter queue's.
    template.resourceCountIs("AWS::Lambda::EventSourceMapping", 5);
    const mapping = mappingOf(service.register);
    expect(mapping?.Properties).toMatchObject({
      FunctionName: { Ref: idOf(service.register) },
      BatchSize: 10,
      MaximumBatchingWindowInSeconds: 1,
      FunctionResponseTypes: ["ReportBatchItemFailures"],
    });
    expect(render(mapping?.Properties.EventSourceArn)).toMatch(/RegisterQueue.*Arn/);
  });

  it("keeps the register queue's visibility at six register timeouts", () => {
    expect(stateful.queues.visibilityTimeout.toSeconds()).toBeGreaterThanOrEqual(
      6 * (functionProps(service.register)?.Timeout as number),
    );
  });
});

describe("optimize function", () => {
  it("has inference's memory and architecture, 15 minutes, and /tmp for four copies of a 1 GiB model", () => {
    const inference = functionProps(service.inference);
    expect(service.optimize.withOnnxRuntime).toBe(true);
    expect(functionProps(service.optimize)).toMatchObject({
      Architectures: inference?.Architectures,
      MemorySize: inference?.MemorySize,
      Timeout: 900,
      EphemeralStorage: { Size: 4 * 1024 },
    });
    expect(
      fullTemplate.findResources("AWS::Lambda::Function")[
        full.service.getLogicalId(full.service.optimize.node.defaultChild as CfnResource)
      ]?.Properties,
    ).toMatchObject({ Architectures: ["x86_64"], MemorySize: 4096 });
  });

  it("leases a claim for longer than an invocation can run and leaves threads to the vCPUs it sees", () => {
    const environment = functionProps(service.optimize)?.Environment as
      | { Variables: Record<string, unknown> }
      | undefined;
    const variables = environment?.Variables ?? {};
    expect(variables).toMatchObject({
      MAAS_REGISTRY_TABLE: expect.anything(),
      MAAS_WORK_DIR: "/tmp/maas-optimize",
      MAAS_OPTIMIZE_MAX_MODEL_BYTES: String(1024 * MiB),
    });
    expect(Number(variables.MAAS_OPTIMIZE_LEASE_SECONDS)).toBeGreaterThanOrEqual(
      functionProps(service.optimize)?.Timeout as number,
    );
    // Unset on purpose: the handler takes the vCPUs it sees, as the inference function does.
    expect(variables.MAAS_INTRA_OP_THREADS).toBeUndefined();
  });

  it("takes one message at a time from the optimize queue, reports failed items and caps its concurrency", () => {
    const mapping = mappingOf(service.optimize);
    expect(mapping?.Properties).toMatchObject({
      BatchSize: 1,
      FunctionResponseTypes: ["ReportBatchItemFailures"],
      ScalingConfig: { MaximumConcurrency: 5 },
    });
    expect(mapping?.Properties.MaximumBatchingWindowInSeconds).toBeUndefined();
    expect(render(mapping?.Properties.EventSourceArn)).toMatch(/OptimizeQueue.*Arn/);
  });

  it("keeps the optimize queue's visibility at six optimize timeouts", () => {
    const queue =
      Template.fromStack(stateful).findResources("AWS::SQS::Queue")[
        stateful.getLogicalId(stateful.queues.optimizeQueue.node.defaultChild as CfnResource)
      ];
    expect(queue?.Properties.VisibilityTimeout).toBeGreaterThanOrEqual(
      6 * (functionProps(service.optimize)?.Timeout as number),
    );
  });
});

describe("jobs worker", () => {
  const variables = variablesOf;

  it("runs for 15 minutes with 10 GiB of memory, inference's architecture and /tmp, and onnxruntime", () => {
    const inference = functionProps(service.inference);
    expect(service.jobsWorker.withOnnxRuntime).toBe(true);
    expect(functionProps(service.jobsWorker)).toMatchObject({
      Runtime: "nodejs22.x",
      Architectures: inference?.Architectures,
      MemorySize: 10_240,
      Timeout: 900,
      EphemeralStorage: inference?.EphemeralStorage,
    });
  });

  it("takes its memory and concurrency from context, and inference's architecture and /tmp", () => {
    expect(functionProps(full.service.jobsWorker, fullTemplate)).toMatchObject({
      Architectures: ["x86_64"],
      MemorySize: 8192,
      EphemeralStorage: { Size: 8192 },
    });
    const [mapping] = mappingsOf(full.service.jobsWorker, fullTemplate).filter(
      (candidate) => !/DeadLetter/.test(render(candidate.Properties.EventSourceArn)),
    );
    expect(mapping?.Properties.ScalingConfig).toEqual({ MaximumConcurrency: 20 });
  });

  it("serves models with inference's registry and artifact cache, within a deadline a minute short of its timeout", () => {
    const worker = variables(service.jobsWorker);
    const inference = variables(service.inference);
    expect(worker).toMatchObject({
      MAAS_REGISTRY_TABLE: inference.MAAS_REGISTRY_TABLE,
      MAAS_ARTIFACT_CACHE_BYTES: inference.MAAS_ARTIFACT_CACHE_BYTES,
      MAAS_INFERENCE_DEADLINE_MS: String(14 * 60 * 1000),
    });
    expect(Number(worker.MAAS_INFERENCE_DEADLINE_MS)).toBeLessThan(
      (functionProps(service.jobsWorker)?.Timeout as number) * 1000,
    );
    // Unset on purpose: the worker never loads models before a job, and it answers no browser.
    expect(worker.MAAS_PRELOAD_MODELS).toBeUndefined();
    expect(worker.MAAS_CORS_ORIGINS).toBeUndefined();
    expect(variables(full.service.jobsWorker, fullTemplate).MAAS_ARTIFACT_CACHE_BYTES).toBe(
      String(Math.floor(8192 * MiB * 0.8)),
    );
  });

  it("knows the jobs table and bucket, the queue's receive count and its dead-letter queue", () => {
    const worker = variables(service.jobsWorker);
    const inference = variables(service.inference);
    expect(worker.MAAS_JOBS_TABLE).toEqual(inference.MAAS_JOBS_TABLE);
    expect(worker.MAAS_ASYNC_BUCKET).toEqual(inference.MAAS_ASYNC_BUCKET);
    expect(worker.MAAS_JOBS_DEAD_LETTER_QUEUE_ARN).toEqual({
      "Fn::GetAtt": [idOf(service.jobsQueue.deadLetterQueue), "Arn"],
    });
    const queue = template.findResources("AWS::SQS::Queue")[idOf(service.jobsQueue.queue)];
    expect(worker.MAAS_JOBS_MAX_RECEIVES).toBe(String(queue?.Properties.RedrivePolicy.maxReceiveCount));
    expect(worker.MAAS_JOBS_MAX_RECEIVES).toBe("3");
    // To bring a failed job's message back sooner than the queue's visibility timeout (not to submit).
    expect(worker.MAAS_JOBS_QUEUE_URL).toEqual(inference.MAAS_JOBS_QUEUE_URL);
  });

  it("takes one job at a time from the jobs queue, reports failed items and caps its concurrency", () => {
    const mappings = mappingsOf(service.jobsWorker);
    expect(mappings).toHaveLength(2);
    const jobs = mappings.find(
      (mapping) => render(mapping.Properties.EventSourceArn) === `<${idOf(service.jobsQueue.queue)}.Arn>`,
    );
    expect(jobs?.Properties).toMatchObject({
      BatchSize: 1,
      FunctionResponseTypes: ["ReportBatchItemFailures"],
      ScalingConfig: { MaximumConcurrency: 10 },
    });
    expect(jobs?.Properties.MaximumBatchingWindowInSeconds).toBeUndefined();
  });

  it("drains the jobs dead-letter queue in batches, reporting failed items", () => {
    const deadLetters = mappingsOf(service.jobsWorker).find(
      (mapping) =>
        render(mapping.Properties.EventSourceArn) === `<${idOf(service.jobsQueue.deadLetterQueue)}.Arn>`,
    );
    expect(deadLetters?.Properties).toMatchObject({
      BatchSize: 10,
      FunctionResponseTypes: ["ReportBatchItemFailures"],
      ScalingConfig: { MaximumConcurrency: 2 },
    });
  });
});

describe("jobs queue", () => {
  const queues = () => template.findResources("AWS::SQS::Queue");
  const jobsQueue = () => queues()[idOf(service.jobsQueue.queue)]?.Properties;
  const deadLetterQueue = () => queues()[idOf(service.jobsQueue.deadLetterQueue)]?.Properties;

  it("is a queue and a dead-letter queue, both SSE and TLS only", () => {
    template.resourceCountIs("AWS::SQS::Queue", 2);
    template.allResourcesProperties("AWS::SQS::Queue", { SqsManagedSseEnabled: true });
    for (const queue of [service.jobsQueue.queue, service.jobsQueue.deadLetterQueue]) {
      template.hasResourceProperties("AWS::SQS::QueuePolicy", {
        Queues: [{ Ref: idOf(queue) }],
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({ Effect: "Deny", Condition: { Bool: { "aws:SecureTransport": "false" } } }),
          ]),
        },
      });
    }
  });

  it("dead-letters a job's message after three receives", () => {
    expect(jobsQueue()?.RedrivePolicy).toEqual({
      deadLetterTargetArn: { "Fn::GetAtt": [idOf(service.jobsQueue.deadLetterQueue), "Arn"] },
      maxReceiveCount: 3,
    });
  });

  it("hides a message for six worker timeouts, the dead letters the worker drains for at least one", () => {
    const timeout = functionProps(service.jobsWorker)?.Timeout as number;
    expect(jobsQueue()?.VisibilityTimeout).toBe(6 * timeout);
    expect(deadLetterQueue()?.VisibilityTimeout).toBeGreaterThanOrEqual(timeout);
  });

  it("keeps a job's message as long as its record lives, and dead letters 14 days", () => {
    expect(jobsQueue()?.MessageRetentionPeriod).toBe(7 * 24 * 3600);
    expect(deadLetterQueue()?.MessageRetentionPeriod).toBe(14 * 24 * 3600);
    const fullQueue =
      fullTemplate.findResources("AWS::SQS::Queue")[
        full.service.getLogicalId(full.service.jobsQueue.queue.node.defaultChild as CfnResource)
      ];
    expect(fullQueue?.Properties.MessageRetentionPeriod).toBe(3 * 24 * 3600);
  });
});

describe("REST API", () => {
  const methods = () =>
    (Object.values(template.findResources("AWS::ApiGateway::Method")) as TemplateResource[]).map(
      (method) => ({
        route: `${method.Properties.HttpMethod} ${cdkPath(method)
          .replace(/^MaasService\/Api\/Api\/Default/, "")
          .replace(/\/[A-Z]+\/Resource$/, "")}`,
        auth: method.Properties.AuthorizationType,
        apiKey: method.Properties.ApiKeyRequired ?? false,
        target: render(method.Properties.Integration),
      }),
    );

  it("routes /v2 and OpenAI's /v1 to inference with an API key, health probes without, /admin with IAM", () => {
    expect(methods().map(({ route, auth, apiKey }) => ({ route, auth, apiKey }))).toEqual(
      expect.arrayContaining([
        { route: "GET /v2", auth: "NONE", apiKey: true },
        { route: "ANY /v2/{proxy+}", auth: "NONE", apiKey: true },
        { route: "ANY /v1/{proxy+}", auth: "NONE", apiKey: true },
        { route: "GET /v2/health/live", auth: "NONE", apiKey: false },
        { route: "GET /v2/health/ready", auth: "NONE", apiKey: false },
        { route: "ANY /admin/{proxy+}", auth: "AWS_IAM", apiKey: false },
        { route: "GET /console", auth: "NONE", apiKey: false },
        { route: "GET /console/{proxy+}", auth: "NONE", apiKey: false },
      ]),
    );
    expect(methods()).toHaveLength(8);
  });

  it("serves the console's files from its own bucket through S3, with its CSP stored beside each file", () => {
    const consoleMethods = methods().filter((method) => method.route.includes("/console"));
    const bucket = service.getLogicalId(service.console?.bucket.node.defaultChild as CfnResource);
    for (const method of consoleMethods) {
      expect(method.target).toContain('"Type":"AWS"');
      expect(method.target).toContain(`:s3:path/",{"Ref":"${bucket}"},"/console/`);
      expect(method.target).toContain(
        '"method.response.header.Content-Security-Policy":"integration.response.header.x-amz-meta-csp"',
      );
      expect(method.target).toContain(`"method.response.header.X-Content-Type-Options":"'nosniff'"`);
    }
    template.hasResourceProperties("Custom::CDKBucketDeployment", {
      DestinationBucketKeyPrefix: "console/",
      Prune: true,
      RetainOnDelete: false,
      UserMetadata: { csp: Match.anyValue() },
    });
  });

  it("lets the console's CSP connect to its own origin and the model bucket's, for presigned uploads", () => {
    const deployment = Object.values(
      template.findResources("Custom::CDKBucketDeployment"),
    )[0] as TemplateResource;
    const csp = render((deployment.Properties.UserMetadata as { csp: unknown }).csp);
    expect(csp).toMatch(
      /^default-src 'self';.* connect-src 'self' https:\/\/<[^>]+RegionalDomainName[^>]*>;/,
    );
    expect(csp).toContain("frame-ancestors 'none'");
  });

  it("leaves the console out when told to", () => {
    const { service: without } = maasStacks({ context: { console: false } });
    expect(without.console).toBeUndefined();
    Template.fromStack(without).resourceCountIs("Custom::CDKBucketDeployment", 0);
  });

  it("proxies /v2 to the inference alias and /admin to the admin function (payload v1)", () => {
    for (const method of methods().filter((candidate) => !candidate.route.includes("/console"))) {
      expect(method.target).toContain('"Type":"AWS_PROXY"');
      if (method.route.includes("/admin")) expect(method.target).toContain(idOf(service.admin));
      else
        expect(method.target).toContain(
          service.getLogicalId(service.inferenceAlias.node.defaultChild as CfnResource),
        );
    }
  });

  it("gives the inference API key no way into /admin: admin needs SigV4, not a key", () => {
    const admin = methods().filter((method) => method.route.includes("/admin"));
    expect(admin).toEqual([expect.objectContaining({ auth: "AWS_IAM", apiKey: false })]);
  });

  it("passes every body to the functions as bytes (binary media types */*), for binary tensor data", () => {
    template.hasResourceProperties("AWS::ApiGateway::RestApi", { BinaryMediaTypes: ["*/*"] });
  });

  it("is regional, traced, throttled and logs JSON access lines", () => {
    template.hasResourceProperties("AWS::ApiGateway::RestApi", {
      EndpointConfiguration: { Types: ["REGIONAL"] },
    });
    const [stage] = Object.values(template.findResources("AWS::ApiGateway::Stage")) as TemplateResource[];
    expect(stage?.Properties).toMatchObject({
      StageName: "prod",
      TracingEnabled: true,
      MethodSettings: [
        {
          HttpMethod: "*",
          ResourcePath: "/*",
          LoggingLevel: "ERROR",
          DataTraceEnabled: false,
          ThrottlingRateLimit: 100,
          ThrottlingBurstLimit: 200,
        },
      ],
    });
    const accessLog = stage?.Properties.AccessLogSetting as { Format: string; DestinationArn: unknown };
    expect(JSON.parse(accessLog.Format)).toMatchObject({
      requestId: "$context.requestId",
      status: "$context.status",
      apiKeyId: "$context.identity.apiKeyId",
      userArn: "$context.identity.userArn",
    });
    expect(render(accessLog.DestinationArn)).toMatch(/AccessLogs/);
  });

  it("sets up API Gateway's CloudWatch logging role", () => {
    template.resourceCountIs("AWS::ApiGateway::Account", 1);
  });

  it("attaches one API key to a usage plan with the stage's throttle and no quota by default", () => {
    template.resourceCountIs("AWS::ApiGateway::ApiKey", 1);
    template.hasResourceProperties("AWS::ApiGateway::UsagePlan", {
      Throttle: { RateLimit: 100, BurstLimit: 200 },
      Quota: Match.absent(),
      ApiStages: [Match.objectLike({ ApiId: Match.anyValue(), Stage: Match.anyValue() })],
    });
    template.hasResourceProperties("AWS::ApiGateway::UsagePlanKey", { KeyType: "API_KEY" });
  });

  it("applies context throttling, quota and CORS origins (preflight on /v2 and /v1 only)", () => {
    fullTemplate.hasResourceProperties("AWS::ApiGateway::UsagePlan", {
      Throttle: { RateLimit: 50, BurstLimit: 80 },
      Quota: { Limit: 100000, Period: "WEEK" },
    });
    const options = (
      Object.values(fullTemplate.findResources("AWS::ApiGateway::Method")) as TemplateResource[]
    )
      .filter((method) => method.Properties.HttpMethod === "OPTIONS")
      .map(cdkPath);
    expect(options.length).toBeGreaterThan(0);
    expect(options.every((path) => path.includes("/v2") || path.includes("/v1"))).toBe(true);
    expect(render(fullTemplate.toJSON())).toContain("'https://app.example.com'");
  });

  it("has no CORS preflight routes unless origins are configured", () => {
    template.resourcePropertiesCountIs("AWS::ApiGateway::Method", { HttpMethod: "OPTIONS" }, 0);
  });

  it("outputs the URL, the key id and the command that prints the key", () => {
    template.hasOutput("ApiUrl", {});
    template.hasOutput("InferenceApiKeyId", { Value: { Ref: idOf(service.api.apiKey) } });
    const command = template.findOutputs("GetInferenceApiKeyCommand").GetInferenceApiKeyCommand?.Value;
    expect(render(command)).toBe(
      `aws apigateway get-api-key --api-key <${idOf(service.api.apiKey)}> --include-value --query value --output text`,
    );
  });
});

describe("least privilege", () => {
  const roleId = (fn: MaasFunction) => service.getLogicalId(fn.role?.node.defaultChild as CfnResource);
  // CDK's own BucketDeployment handler (the console's files) is left out: aws-cdk-lib writes its policy.
  const allStatements = () =>
    (Object.values(template.findResources("AWS::IAM::Policy")) as TemplateResource[])
      .filter((policy) => !cdkPath(policy).includes("/Custom::CDKBucketDeployment"))
      .flatMap((policy) => policy.Properties.PolicyDocument?.Statement ?? []);

  it("grants no wildcard action anywhere", () => {
    for (const statement of allStatements()) {
      for (const action of asArray(statement.Action)) expect(action).not.toContain("*");
    }
  });

  it("uses '*' resources only for X-Ray and CloudWatch reads, and wildcards only as object prefixes", () => {
    // Neither has resource-level permissions.
    const unscoped = ["xray:PutTraceSegments", "xray:PutTelemetryRecords", "cloudwatch:GetMetricData"];
    for (const statement of allStatements()) {
      for (const resource of asArray(statement.Resource).map(render)) {
        if (resource === "*")
          expect(asArray(statement.Action).every((action) => unscoped.includes(action))).toBe(true);
        else if (resource.includes("*"))
          expect(resource).toMatch(/\/(models|artifacts|async\/inputs|async\/results|capture|console)\/\*$/);
      }
    }
  });

  const logsAndTraces = (logs: string) => [
    `logs:CreateLogStream <${logs}.Arn>`,
    `logs:PutLogEvents <${logs}.Arn>`,
    "xray:PutTelemetryRecords *",
    "xray:PutTraceSegments *",
  ];
  const logGroupId = (fn: MaasFunction) => service.getLogicalId(fn.logGroup.node.defaultChild as CfnResource);
  const registryRead = (table: string) => [
    `dynamodb:BatchGetItem <${table}>`,
    `dynamodb:BatchGetItem <${table}>/index/models`,
    `dynamodb:GetItem <${table}>`,
    `dynamodb:GetItem <${table}>/index/models`,
    `dynamodb:Query <${table}>`,
    `dynamodb:Query <${table}>/index/models`,
  ];
  const registryWrite = (table: string) =>
    ["BatchWriteItem", "ConditionCheckItem", "DeleteItem", "PutItem", "UpdateItem"].map(
      (action) => `dynamodb:${action} <${table}>`,
    );
  const queueConsume = (arn: string) =>
    ["ChangeMessageVisibility", "DeleteMessage", "GetQueueAttributes", "GetQueueUrl", "ReceiveMessage"].map(
      (action) => `sqs:${action} <${arn}>`,
    );
  const output = (pattern: RegExp) => {
    const found = JSON.stringify(template.toJSON()).match(pattern);
    if (!found) throw new Error(`no output matching ${pattern}`);
    return found[0];
  };
  const table = () => output(/PublishOutputFnGetAttRegistryTable\w+Arn\w+/);
  const bucket = () => output(/PublishOutputFnGetAttModelsBucket\w+Arn\w+/);
  const jobsTable = () => output(/PublishOutputFnGetAttJobsTable\w+Arn\w+/);
  const servingReads = () => [
    ...registryRead(table()),
    `s3:GetObject <${bucket()}>/artifacts/*`,
    `s3:GetObject <${bucket()}>/models/*`,
    `s3:PutObject <${bucket()}>/artifacts/*`,
  ];

  it("lets inference read serving artifacts, uploads (to heal a lost artifact) and the registry, and put artifacts back", () => {
    expect(permissionsOf(template, roleId(service.inference))).toEqual(
      expect.arrayContaining([...logsAndTraces(logGroupId(service.inference)), ...servingReads()]),
    );
  });

  it("lets inference take job inputs, record and queue jobs, sign for their results and write captures, and nothing more", () => {
    expect(permissionsOf(template, roleId(service.inference))).toEqual(
      [
        ...logsAndTraces(logGroupId(service.inference)),
        ...servingReads(),
        `s3:PutObject <${bucket()}>/async/inputs/*`,
        `s3:GetObject <${bucket()}>/async/inputs/*`,
        `s3:GetObject <${bucket()}>/async/results/*`,
        `s3:PutObject <${bucket()}>/capture/*`,
        `dynamodb:GetItem <${jobsTable()}>`,
        `dynamodb:PutItem <${jobsTable()}>`,
        `dynamodb:UpdateItem <${jobsTable()}>`,
        `sqs:SendMessage <${idOf(service.jobsQueue.queue)}.Arn>`,
      ].sort(),
    );
  });

  it("lets the jobs worker serve models as inference does, read job inputs, write results and update jobs, and consume its queues", () => {
    expect(permissionsOf(template, roleId(service.jobsWorker))).toEqual(
      [
        ...logsAndTraces(logGroupId(service.jobsWorker)),
        ...servingReads(),
        `s3:GetObject <${bucket()}>/async/inputs/*`,
        `s3:PutObject <${bucket()}>/async/results/*`,
        `s3:AbortMultipartUpload <${bucket()}>/async/results/*`,
        `dynamodb:GetItem <${jobsTable()}>`,
        `dynamodb:UpdateItem <${jobsTable()}>`,
        ...queueConsume(`${idOf(service.jobsQueue.queue)}.Arn`),
        ...queueConsume(`${idOf(service.jobsQueue.deadLetterQueue)}.Arn`),
      ].sort(),
    );
  });

  it("lets admin read and write the registry, delete and presign uploads, and read the metrics", () => {
    expect(permissionsOf(template, roleId(service.admin))).toEqual(
      [
        ...logsAndTraces(logGroupId(service.admin)),
        ...registryRead(table()),
        ...registryWrite(table()),
        `s3:DeleteObject <${bucket()}>/models/*`,
        // The console's figures (a policy of its own) and publish: presigned PUTs, after a HEAD.
        "cloudwatch:GetMetricData *",
        `s3:GetObject <${bucket()}>/models/*`,
        `s3:PutObject <${bucket()}>/models/*`,
      ].sort(),
    );
  });

  it("lets optimize read originals and manifests, upload variants, list keys and write the registry", () => {
    const optimizeQueue = output(/PublishOutputFnGetAttPublishOptimizeQueue\w+Arn\w+/);
    const optimizeDeadLetters = output(/PublishOutputFnGetAttPublishOptimizeDeadLetterQueue\w+Arn\w+/);
    expect(permissionsOf(template, roleId(service.optimize))).toEqual(
      [
        ...logsAndTraces(logGroupId(service.optimize)),
        ...registryRead(table()),
        ...registryWrite(table()),
        `s3:GetObject <${bucket()}>/artifacts/*`,
        `s3:GetObject <${bucket()}>/models/*`,
        `s3:PutObject <${bucket()}>/artifacts/*`,
        `s3:AbortMultipartUpload <${bucket()}>/artifacts/*`,
        `s3:ListBucket <${bucket()}>`,
        ...queueConsume(optimizeQueue),
        ...queueConsume(optimizeDeadLetters),
      ].sort(),
    );
  });

  it("lets register read uploads, write artifacts and the registry, consume its queue and feed optimize", () => {
    const permissions = permissionsOf(template, roleId(service.register));
    const registerQueue = output(/PublishOutputFnGetAttPublishRegisterQueue\w+Arn\w+/);
    const optimizeQueue = output(/PublishOutputFnGetAttPublishOptimizeQueue\w+Arn\w+/);
    expect(permissions).toEqual(
      [
        ...logsAndTraces(logGroupId(service.register)),
        ...registryRead(table()),
        ...registryWrite(table()),
        `s3:GetObject <${bucket()}>/models/*`,
        `s3:GetObject <${bucket()}>/artifacts/*`,
        `s3:PutObject <${bucket()}>/artifacts/*`,
        `s3:ListBucket <${bucket()}>`,
        ...queueConsume(registerQueue),
        ...["GetQueueAttributes", "GetQueueUrl", "SendMessage"].map(
          (action) => `sqs:${action} <${optimizeQueue}>`,
        ),
      ].sort(),
    );
  });
});

describe("alarms", () => {
  const alarms = () => Object.values(template.findResources("AWS::CloudWatch::Alarm")) as TemplateResource[];

  it("alarm on any message in either publish dead-letter queue", () => {
    const alarmOn = (queue: typeof stateful.queues.registerDeadLetterQueue) => {
      const name = stateful.getLogicalId(queue.node.defaultChild as CfnResource);
      return alarms().find((candidate) => render(candidate.Properties.Dimensions ?? []).includes(name));
    };
    const anyMessage = { Namespace: "AWS/SQS", Threshold: 0, ComparisonOperator: "GreaterThanThreshold" };
    expect(alarmOn(stateful.queues.registerDeadLetterQueue)?.Properties).toMatchObject({
      ...anyMessage,
      MetricName: "ApproximateNumberOfMessagesVisible",
      Statistic: "Maximum",
      TreatMissingData: "notBreaching",
    });
    // The optimize function drains its dead-letter queue (recording each failure on its version), so the
    // queue's depth stays near 0: its alarm counts the messages received from it instead.
    expect(alarmOn(stateful.queues.optimizeDeadLetterQueue)?.Properties).toMatchObject({
      ...anyMessage,
      MetricName: "NumberOfMessagesReceived",
      Statistic: "Sum",
      TreatMissingData: "notBreaching",
    });
  });

  it("alarm when a job reaches the jobs dead-letter queue, which the worker drains", () => {
    const name = idOf(service.jobsQueue.deadLetterQueue);
    const alarm = alarms().find((candidate) => render(candidate.Properties.Dimensions ?? []).includes(name));
    expect(alarm?.Properties).toMatchObject({
      Namespace: "AWS/SQS",
      MetricName: "NumberOfMessagesReceived",
      Statistic: "Sum",
      Threshold: 0,
      ComparisonOperator: "GreaterThanThreshold",
      TreatMissingData: "notBreaching",
    });
  });

  it("alarm on the API's 5xx rate, inference latency, errors and throttles, and on optimize and jobs worker errors", () => {
    const metrics = alarms().map((alarm) =>
      alarm.Properties.Metrics
        ? `math ${(alarm.Properties.Metrics as { Expression?: string }[]).find((query) => query.Expression)?.Expression}`
        : `${alarm.Properties.Namespace} ${alarm.Properties.MetricName}`,
    );
    expect(metrics.sort()).toEqual(
      [
        "math 100 * errors / requests",
        "ServerlessMaaS RequestLatency",
        "AWS/Lambda Errors",
        "AWS/Lambda Errors",
        "AWS/Lambda Errors",
        "AWS/Lambda Throttles",
        "AWS/SQS ApproximateNumberOfMessagesVisible",
        "AWS/SQS NumberOfMessagesReceived",
        "AWS/SQS NumberOfMessagesReceived",
      ].sort(),
    );
    for (const alarm of alarms()) expect(alarm.Properties.AlarmActions).toBeUndefined();
    const optimizeErrors = alarms().find((alarm) =>
      render(alarm.Properties.Dimensions ?? []).includes(idOf(service.optimize)),
    );
    expect(optimizeErrors?.Properties).toMatchObject({
      MetricName: "Errors",
      Statistic: "Sum",
      Threshold: 0,
    });
    const jobsErrors = alarms().find((alarm) =>
      render(alarm.Properties.Dimensions ?? []).includes(idOf(service.jobsWorker)),
    );
    expect(jobsErrors?.Properties).toMatchObject({ MetricName: "Errors", Statistic: "Sum", Threshold: 0 });
  });

  it("mail every alarm and recovery through a TLS-only topic when alarmEmail is set", () => {
    fullTemplate.hasResourceProperties("AWS::SNS::Subscription", {
      Protocol: "email",
      Endpoint: "ops@example.com",
    });
    const topic = full.service.getLogicalId(full.service.alarms.topic?.node.defaultChild as CfnResource);
    const fullAlarms = Object.values(
      fullTemplate.findResources("AWS::CloudWatch::Alarm"),
    ) as TemplateResource[];
    expect(fullAlarms).toHaveLength(9);
    for (const alarm of fullAlarms) {
      expect(alarm.Properties.AlarmActions).toEqual([{ Ref: topic }]);
      expect(alarm.Properties.OKActions).toEqual([{ Ref: topic }]);
    }
    fullTemplate.hasResourceProperties("AWS::SNS::TopicPolicy", {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Effect: "Deny", Condition: { Bool: { "aws:SecureTransport": "false" } } }),
        ]),
      },
    });
  });
});
