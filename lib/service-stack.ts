import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Aws, CfnOutput, Duration, Size, Stack, type StackProps } from "aws-cdk-lib";
import { type IMetric, MathExpression, Stats } from "aws-cdk-lib/aws-cloudwatch";
import { Policy, PolicyStatement, type Role } from "aws-cdk-lib/aws-iam";
import { type Alias, Architecture, EventSourceMapping } from "aws-cdk-lib/aws-lambda";
import { SqsEventSource, type SqsEventSourceProps } from "aws-cdk-lib/aws-lambda-event-sources";
import type { IQueue } from "aws-cdk-lib/aws-sqs";
import type { Construct } from "constructs";
import { METRICS } from "#core/metrics/names.ts";
import { MODEL_NAME_PATTERN } from "#core/model.ts";
import { adminEnvironment } from "#lambdas/admin/config.ts";
import { inferenceEnvironment } from "#lambdas/inference/config.ts";
import { jobsEnvironment } from "#lambdas/jobs/config.ts";
import { optimizeEnvironment } from "#lambdas/optimize/config.ts";
import { registerEnvironment } from "#lambdas/register/config.ts";
import { InferenceApi, type InferenceQuota, type InferenceThrottle } from "./inference-api.ts";
import { JobsQueue } from "./jobs-queue.ts";
import type { JobsTable } from "./jobs-table.ts";
import { LAZY_MODULES } from "./lazy-modules.ts";
import { MaasAlarms } from "./maas-alarms.ts";
import { MaasConsole } from "./maas-console.ts";
import { MaasDashboard } from "./maas-dashboard.ts";
import { LAMBDA_EPHEMERAL_RANGE_MB, MaasFunction } from "./maas-function.ts";
import { backendMetric, METRICS_SERVICES } from "./maas-metrics.ts";
import { ENDPOINT_MODELS_PREFIX, type ModelBucket } from "./model-bucket.ts";
import { ModelEndpoint, type ModelEndpointProps } from "./model-endpoint.ts";
import type { ModelRegistryTable } from "./model-registry-table.ts";
import { acknowledge } from "./nag.ts";
import type { PublishQueues } from "./publish-queues.ts";

const MiB = 1024 * 1024;
const MAX_SINGLE_COPY_BYTES = 5 * 1024 * MiB;
const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** Share of the inference function's /tmp the artifact cache may fill; the rest is ORT's and Node's. */
export const ARTIFACT_CACHE_SHARE = 0.8;
/** /tmp the register function keeps free besides the model it stages. */
const REGISTER_TMP_HEADROOM_MB = 512;
/** The optimizer holds the original and up to three variants of it in /tmp at once. */
export const OPTIMIZE_TMP_MODEL_COPIES = 4;
/** Registration streams a large model's archive to the endpoint's model prefix within one invocation. */
const MIN_REGISTER_TIMEOUT_WITH_SAGEMAKER = Duration.minutes(5);
/** Lambda's longest: a job may be a large input on a slow model. */
const JOBS_TIMEOUT = Duration.minutes(15);
/** One job's inference deadline: a minute of the timeout is kept to write its result and record its end. */
const JOBS_INFERENCE_DEADLINE = JOBS_TIMEOUT.minus(Duration.minutes(1));
/** SQS keeps a message 14 days at most. */
const MAX_QUEUE_RETENTION_DAYS = 14;

export interface MaasServiceStackProps extends StackProps {
  /** From the stateful stack. */
  readonly models: ModelBucket;
  readonly registry: ModelRegistryTable;
  readonly queues: PublishQueues;
  readonly jobs: JobsTable;
  /** @default Architecture.ARM_64 */
  readonly architecture?: Architecture;
  /**
   * Memory of the inference, register and optimize functions (vCPUs scale with it; the optimizer
   * benchmarks variants with the vCPUs inference will serve them with).
   * @default 3008
   */
  readonly inferenceMemoryMb?: number;
  /**
   * /tmp of the inference function; 80% of it caches model artifacts.
   * @default 4096
   */
  readonly ephemeralStorageMb?: number;
  /**
   * Models up to this size are served by Lambda; larger ones go to SageMaker.
   * @default 512 MiB
   */
  readonly lambdaMaxModelBytes?: number;
  /**
   * Uploads above this size are rejected at registration.
   * @default 2 GiB (protobuf's limit for a single-file ONNX model)
   */
  readonly maxModelBytes?: number;
  /**
   * Provisioned concurrency of the inference alias `live`; 0 for none.
   * @default 0
   */
  readonly provisionedConcurrency?: number;
  /**
   * Models that provisioned environments load during initialization (`MAAS_PRELOAD_MODELS`).
   * @default []
   */
  readonly preloadModels?: readonly string[];
  /** @default [] (no CORS) */
  readonly corsOrigins?: readonly string[];
  /**
   * Serve the web console at `<api>/console/` (issue 20).
   * @default true
   */
  readonly console?: boolean;
  /** @default InferenceApi's default throttle */
  readonly throttle?: InferenceThrottle;
  /** @default - no quota */
  readonly quota?: InferenceQuota;
  /** @default - alarms without notifications */
  readonly alarmEmail?: string;
  /**
   * p99 of the inference function's request latency (every model together) above which its alarm fires.
   * @default Duration.seconds(5)
   */
  readonly requestLatencyThreshold?: Duration;
  /**
   * Share of the API's requests answered 5xx, in percent, above which its alarm fires.
   * @default 5
   */
  readonly apiErrorRateThreshold?: number;
  /** @default true */
  readonly apiGatewayCloudWatchRole?: boolean;
  /**
   * Timeout of the register function; the register queue's visibility timeout must be six times this.
   * @default Duration.minutes(15)
   */
  readonly registerTimeout?: Duration;
  /**
   * Timeout of the optimize function; the optimize queue's visibility timeout must be six times this.
   * @default Duration.minutes(15)
   */
  readonly optimizeTimeout?: Duration;
  /**
   * Larger models are left unoptimized; the optimize function's /tmp holds four copies of this size.
   * @default 1 GiB
   */
  readonly optimizeMaxModelBytes?: number;
  /**
   * Optimizations running at once (the SQS event source's maximum concurrency, 2–1000): a bulk
   * publish must not take the account's Lambda concurrency from the inference function.
   * @default 5
   */
  readonly optimizeMaxConcurrency?: number;
  /**
   * Memory of the jobs worker, which holds a job's whole input (up to 1 GiB, more as decoded tensors)
   * and its result.
   * @default 10240 (Lambda's most, and its most vCPUs)
   */
  readonly jobsMemoryMb?: number;
  /**
   * Jobs running at once (the SQS event source's maximum concurrency, 2–1000): a burst of submissions
   * must not take the account's Lambda concurrency from the inference function.
   * @default 10
   */
  readonly jobsMaxConcurrency?: number;
  /**
   * A SageMaker endpoint for sagemaker-target versions (models above `lambdaMaxModelBytes`). It bills
   * per instance-hour even when idle.
   * @default - none: sagemaker-target versions answer 503
   */
  readonly sagemaker?: Omit<ModelEndpointProps, "models">;
}

interface Sizing {
  readonly memoryMb: number;
  readonly ephemeralMb: number;
  readonly lambdaMaxModelBytes: number;
  readonly maxModelBytes: number;
  readonly provisionedConcurrency: number;
  readonly preloadModels: readonly string[];
  readonly registerTimeout: Duration;
  readonly optimizeTimeout: Duration;
  readonly optimizeMaxModelBytes: number;
  readonly optimizeMaxConcurrency: number;
  readonly jobsMemoryMb: number;
  readonly jobsMaxConcurrency: number;
}

/**
 * The stateless service: the inference, admin, register, optimize and jobs functions, the REST API in
 * front of them, the jobs queue, the queues' event sources, alarms, the dashboard, and optionally the
 * SageMaker endpoint. Redeployed freely; state lives in the stateful stack.
 */
export class MaasServiceStack extends Stack {
  public readonly inference: MaasFunction;
  /** The alias the API invokes; carries the provisioned concurrency. */
  public readonly inferenceAlias: Alias;
  public readonly admin: MaasFunction;
  public readonly register: MaasFunction;
  public readonly optimize: MaasFunction;
  /** Runs asynchronous inference jobs from the jobs queue. */
  public readonly jobsWorker: MaasFunction;
  public readonly jobsQueue: JobsQueue;
  /** The SageMaker endpoint, when `sagemaker` is set. */
  public readonly endpoint?: ModelEndpoint;
  public readonly api: InferenceApi;
  /** The web console, unless `console` is false. */
  public readonly console?: MaasConsole;
  public readonly alarms: MaasAlarms;
  public readonly dashboard: MaasDashboard;

  constructor(scope: Construct, id: string, props: MaasServiceStackProps) {
    super(scope, id, props);
    const sizing = resolveSizing(props);
    const { models, registry, queues, jobs } = props;
    const architecture = props.architecture ?? Architecture.ARM_64;
    const common = {
      architecture,
      projectRoot: ROOT,
      depsLockFilePath: join(ROOT, "package-lock.json"),
    };
    if (props.sagemaker !== undefined) {
      this.endpoint = new ModelEndpoint(this, "SageMaker", { ...props.sagemaker, models });
    }
    const endpoint = this.endpoint;
    this.jobsQueue = new JobsQueue(this, "JobsQueue", {
      visibilityTimeout: Duration.seconds(6 * JOBS_TIMEOUT.toSeconds()),
      retentionPeriod: Duration.days(Math.min(models.jobRetentionDays, MAX_QUEUE_RETENTION_DAYS)),
    });
    // What the inference function and the jobs worker share: they serve the same models the same way.
    const serving = {
      registryTable: registry.table.tableName,
      artifactCacheBytes: artifactCacheBytes(sizing.ephemeralMb),
      sagemakerEndpoint: endpoint?.endpoint.attrEndpointName,
      sagemakerMode: endpoint?.mode,
      jobsTable: jobs.table.tableName,
      asyncBucket: models.bucket.bucketName,
    };

    this.inference = new MaasFunction(this, "Inference", {
      ...common,
      entry: join(ROOT, "lambdas/inference/handler.ts"),
      description: "serverless-maas: Open Inference Protocol (V2) on onnxruntime-node",
      memorySize: sizing.memoryMb,
      ephemeralStorageSize: Size.mebibytes(sizing.ephemeralMb),
      // Longer than API Gateway's 29 s: a cold model load that outlives its request still warms the environment.
      timeout: Duration.seconds(60),
      // Loaded on first use only: cold starts do not compile the SageMaker and asynchronous clients.
      separateModules: [...LAZY_MODULES],
      // Image task versions decode and resize their images with sharp, imported on their first request.
      withSharp: true,
      metricsService: METRICS_SERVICES.inference,
      environment: inferenceEnvironment({
        ...serving,
        preloadModels: sizing.preloadModels.length > 0 ? sizing.preloadModels.join(",") : undefined,
        corsOrigins: props.corsOrigins?.length ? props.corsOrigins.join(",") : undefined,
        jobsQueueUrl: this.jobsQueue.queue.queueUrl,
        asyncRetentionDays: models.jobRetentionDays,
        captureBucket: models.bucket.bucketName,
      }),
    });
    this.inferenceAlias = this.inference.addAlias("live", {
      provisionedConcurrentExecutions:
        sizing.provisionedConcurrency > 0 ? sizing.provisionedConcurrency : undefined,
    });
    models.grantReadArtifacts(this.inference);
    // Self-healing: a lost artifact is read from its upload and put back by a server-side copy.
    models.grantReadUploads(this.inference);
    models.grantWriteArtifacts(this.inference);
    registry.grantReadRegistry(this.inference);
    endpoint?.grantInvoke(this.inference);
    // Asynchronous inference: uploads and inline bodies in, jobs recorded and queued, results signed for.
    models.grantWriteJobInputs(this.inference);
    models.grantReadJobInputs(this.inference);
    models.grantReadJobResults(this.inference);
    models.grantWriteCapture(this.inference);
    jobs.grantSubmitJobs(this.inference);
    this.jobsQueue.grantSubmit(this.inference);

    this.jobsWorker = new MaasFunction(this, "Jobs", {
      ...common,
      entry: join(ROOT, "lambdas/jobs/handler.ts"),
      description: "serverless-maas: runs asynchronous inference jobs (SQS -> S3)",
      memorySize: sizing.jobsMemoryMb,
      // The inference function's /tmp and artifact cache: it serves the same models.
      ephemeralStorageSize: Size.mebibytes(sizing.ephemeralMb),
      timeout: JOBS_TIMEOUT,
      separateModules: [...LAZY_MODULES],
      withSharp: true,
      metricsService: METRICS_SERVICES.jobs,
      environment: {
        ...inferenceEnvironment({
          ...serving,
          inferenceDeadlineMs: JOBS_INFERENCE_DEADLINE.toMilliseconds(),
          // To bring a failed job back sooner than the queue's visibility timeout.
          jobsQueueUrl: this.jobsQueue.queue.queueUrl,
        }),
        ...jobsEnvironment({
          // The last receive records a failure on the job instead of throwing it to the DLQ.
          maxReceives: this.jobsQueue.maxReceiveCount,
          deadLetterQueueArn: this.jobsQueue.deadLetterQueue.queueArn,
        }),
      },
    });
    this.consumeQueue(this.jobsWorker, "jobs", this.jobsQueue.queue, this.jobsQueue.maxReceiveCount, {
      // One job per invocation: each may take the function's memory and the whole 15 minutes.
      batchSize: 1,
      reportBatchItemFailures: true,
      maxConcurrency: sizing.jobsMaxConcurrency,
    });
    // Dead letters (jobs whose runs crashed or timed out every time) end their job `failed`, so that no
    // job stays `queued` or `running` until it expires; each is a quick table write.
    this.jobsWorker.addEventSource(
      new SqsEventSource(this.jobsQueue.deadLetterQueue, {
        batchSize: 10,
        reportBatchItemFailures: true,
        maxConcurrency: 2,
      }),
    );
    acknowledge(
      this.newestMapping(this.jobsWorker, "jobs dead-letter"),
      "Serverless-LambdaEventSourceMappingDestination",
      "This mapping drains the jobs dead-letter queue into job records; a message it cannot record stays in the queue (14 days) and its alarm fires.",
    );
    registry.grantReadRegistry(this.jobsWorker);
    models.grantReadArtifacts(this.jobsWorker);
    // Self-healing, as in the inference function.
    models.grantReadUploads(this.jobsWorker);
    models.grantWriteArtifacts(this.jobsWorker);
    endpoint?.grantInvoke(this.jobsWorker);
    models.grantReadJobInputs(this.jobsWorker);
    models.grantWriteJobResults(this.jobsWorker);
    jobs.grantRunJobs(this.jobsWorker);

    this.admin = new MaasFunction(this, "Admin", {
      ...common,
      entry: join(ROOT, "lambdas/admin/handler.ts"),
      description: "serverless-maas: model administration (versions, aliases)",
      withOnnxRuntime: false,
      environment: adminEnvironment({
        registryTable: registry.table.tableName,
        bucket: models.bucket.bucketName,
      }),
    });
    registry.grantReadWriteRegistry(this.admin);
    models.grantDeleteUploads(this.admin);
    // The console's publish: presigned PUTs of models/<m>/<v>/*, after checking nothing is there yet.
    models.grantWriteUploads(this.admin);
    models.grantReadUploads(this.admin);
    // The console's figures, in a policy of its own: GetMetricData has no resource-level permissions.
    const figures = new Policy(this, "AdminFiguresPolicy", {
      roles: [this.admin.role as Role],
      statements: [new PolicyStatement({ actions: ["cloudwatch:GetMetricData"], resources: ["*"] })],
    });
    acknowledge(
      figures,
      "AwsSolutions-IAM5[Resource::*]",
      "cloudwatch:GetMetricData supports no resource-level permissions; the admin function reads the service's own metrics for the console's charts.",
    );

    this.register = new MaasFunction(this, "Register", {
      ...common,
      entry: join(ROOT, "lambdas/register/handler.ts"),
      description: "serverless-maas: validates and registers uploaded models (S3 -> SQS)",
      memorySize: sizing.memoryMb,
      ephemeralStorageSize: Size.mebibytes(registerEphemeralMb(sizing.maxModelBytes)),
      timeout: sizing.registerTimeout,
      // Registration runs an image task's chain on generated images.
      withSharp: true,
      metricsService: METRICS_SERVICES.register,
      environment: registerEnvironment({
        registryTable: registry.table.tableName,
        optimizeQueueUrl: queues.optimizeQueue.queueUrl,
        maxModelBytes: sizing.maxModelBytes,
        lambdaMaxModelBytes: sizing.lambdaMaxModelBytes,
        workDir: "/tmp/maas-register",
        sagemakerModelPrefix: endpoint ? ENDPOINT_MODELS_PREFIX : undefined,
      }),
    });
    this.consumeQueue(this.register, "register", queues.registerQueue, queues.maxReceiveCount, {
      batchSize: 10,
      maxBatchingWindow: Duration.seconds(1),
      reportBatchItemFailures: true,
    });
    models.grantReadUploads(this.register);
    models.grantReadArtifacts(this.register);
    models.grantWriteArtifacts(this.register);
    models.grantListKeys(this.register);
    registry.grantReadWriteRegistry(this.register);
    queues.optimizeQueue.grantSendMessages(this.register);
    if (endpoint) models.grantPublishEndpointModels(this.register);

    this.optimize = new MaasFunction(this, "Optimize", {
      ...common,
      entry: join(ROOT, "lambdas/optimize/handler.ts"),
      description: "serverless-maas: builds, checks and benchmarks optimized variants of registered models",
      // Inference's memory, hence its vCPUs: the handler sizes onnxruntime's threads from the vCPUs it
      // sees (MAAS_INTRA_OP_THREADS unset), so benchmarks run with the threads serving will have.
      memorySize: sizing.memoryMb,
      ephemeralStorageSize: Size.mebibytes(optimizeEphemeralMb(sizing.optimizeMaxModelBytes)),
      timeout: sizing.optimizeTimeout,
      metricsService: METRICS_SERVICES.optimize,
      environment: optimizeEnvironment({
        registryTable: registry.table.tableName,
        workDir: "/tmp/maas-optimize",
        maxModelBytes: sizing.optimizeMaxModelBytes,
        // A claim older than any invocation can live (plus a minute of clock skew) belongs to a dead attempt.
        leaseSeconds: sizing.optimizeTimeout.toSeconds() + 60,
        // The last receive records a failure on the version instead of throwing it to the DLQ.
        maxReceives: queues.maxReceiveCount,
        deadLetterQueueArn: queues.optimizeDeadLetterQueue.queueArn,
      }),
    });
    this.consumeQueue(this.optimize, "optimize", queues.optimizeQueue, queues.maxReceiveCount, {
      // One version per invocation: each benchmark wants the function's vCPUs to itself.
      batchSize: 1,
      reportBatchItemFailures: true,
      maxConcurrency: sizing.optimizeMaxConcurrency,
    });
    // Dead letters (attempts that crashed or timed out every time) end their version's optimization,
    // recorded, so that no version stays `optimizing`; each is a quick registry write.
    this.optimize.addEventSource(
      new SqsEventSource(queues.optimizeDeadLetterQueue, {
        batchSize: 10,
        reportBatchItemFailures: true,
        maxConcurrency: 2,
      }),
    );
    acknowledge(
      this.newestMapping(this.optimize, "optimize dead-letter"),
      "Serverless-LambdaEventSourceMappingDestination",
      "This mapping drains the optimize dead-letter queue into registry records; a message it cannot record stays in the queue (14 days) and its alarm fires.",
    );
    registry.grantReadWriteRegistry(this.optimize);
    models.grantReadArtifacts(this.optimize);
    // Manifests (models/<name>/<version>/maas.json): parity samples and pins.
    models.grantReadUploads(this.optimize);
    models.grantUploadArtifacts(this.optimize);
    models.grantListKeys(this.optimize);

    this.api = new InferenceApi(this, "Api", {
      inference: this.inferenceAlias,
      admin: this.admin,
      throttle: props.throttle,
      quota: props.quota,
      corsOrigins: props.corsOrigins,
      cloudWatchRole: props.apiGatewayCloudWatchRole,
    });
    if (props.console ?? true)
      this.console = new MaasConsole(this, "Console", { api: this.api.api, uploadBucket: models.bucket });
    this.alarms = new MaasAlarms(this, "Alarms", {
      deadLetterQueues: { Register: queues.registerDeadLetterQueue },
      drainedDeadLetterQueues: {
        Optimize: queues.optimizeDeadLetterQueue,
        Jobs: this.jobsQueue.deadLetterQueue,
      },
      api: this.api.api,
      inference: this.inference,
      workers: { Optimize: this.optimize, Jobs: this.jobsWorker },
      endpoint,
      requestLatency: requestLatencyP99(endpoint !== undefined),
      requestLatencyThreshold: props.requestLatencyThreshold,
      apiErrorRateThreshold: props.apiErrorRateThreshold,
      alarmEmail: props.alarmEmail,
    });
    this.dashboard = new MaasDashboard(this, "Dashboard", {
      functions: {
        Inference: this.inference,
        Jobs: this.jobsWorker,
        Register: this.register,
        Optimize: this.optimize,
        Admin: this.admin,
      },
      queues: {
        Register: { queue: queues.registerQueue, deadLetterQueue: queues.registerDeadLetterQueue },
        Optimize: { queue: queues.optimizeQueue, deadLetterQueue: queues.optimizeDeadLetterQueue },
        Jobs: { queue: this.jobsQueue.queue, deadLetterQueue: this.jobsQueue.deadLetterQueue },
      },
      api: this.api.api,
      endpoint,
      alarms: this.alarms.alarms,
    });

    this.acknowledgeSynchronousInvocation(this.inference, "API Gateway invokes it synchronously");
    this.acknowledgeSynchronousInvocation(this.admin, "API Gateway invokes it synchronously");

    new CfnOutput(this, "ApiUrl", {
      value: this.api.api.url,
      description: "Base URL; V2 routes are under v2/",
    });
    new CfnOutput(this, "InferenceApiKeyId", { value: this.api.apiKey.keyId });
    new CfnOutput(this, "GetInferenceApiKeyCommand", {
      value: `aws apigateway get-api-key --api-key ${this.api.apiKey.keyId} --include-value --query value --output text`,
      description: "Prints the inference API key (send it as x-api-key)",
    });
    new CfnOutput(this, "AdminInvokeArn", {
      value: this.api.api.arnForExecuteApi("*", "/admin/*", this.api.api.deploymentStage.stageName),
      description: "Grant execute-api:Invoke on this ARN to the principals that administer models",
    });
    new CfnOutput(this, "DashboardUrl", {
      value: `https://console.aws.amazon.com/cloudwatch/home?region=${Aws.REGION}#dashboards:name=${this.dashboard.dashboard.dashboardName}`,
      description: "The service's CloudWatch dashboard",
    });
    if (endpoint) {
      new CfnOutput(this, "SageMakerEndpointName", {
        value: endpoint.endpoint.attrEndpointName,
        description: `Serves sagemaker-target versions (${endpoint.instanceType}, ${endpoint.mode})`,
      });
    }
  }

  /**
   * Subscribes `fn` to one of the publish queues with an SQS event source, and acknowledges the
   * dead-letter findings on the function and its event source mapping: the queue's redrive policy
   * (after `maxReceiveCount` receives) is where failures go.
   */
  private consumeQueue(
    fn: MaasFunction,
    name: string,
    queue: IQueue,
    maxReceiveCount: number,
    props: SqsEventSourceProps,
  ): void {
    fn.addEventSource(new SqsEventSource(queue, props));
    this.acknowledgeSynchronousInvocation(
      fn,
      `an SQS event source polls for it synchronously; failures go to the ${name} queue's DLQ`,
    );
    acknowledge(
      this.newestMapping(fn, name),
      "Serverless-LambdaEventSourceMappingDestination",
      `SQS event sources have no on-failure destination: the ${name} queue's redrive policy moves failed messages to its DLQ after ${maxReceiveCount} receives.`,
    );
  }

  /** The event source mapping added to `fn` last. */
  private newestMapping(fn: MaasFunction, name: string): EventSourceMapping {
    const mapping = fn.node.children.filter((child) => child instanceof EventSourceMapping).at(-1);
    if (mapping === undefined) throw new Error(`the ${name} function has no event source mapping`);
    return mapping;
  }

  private acknowledgeSynchronousInvocation(fn: MaasFunction, how: string): void {
    acknowledge(fn, "Serverless-LambdaDLQ", `No dead-letter target: ${how}.`);
    acknowledge(fn, "Serverless-LambdaAsyncFailureDestination", `Never invoked asynchronously: ${how}.`);
  }
}

/**
 * p99 of every model's end-to-end latency, per backend (the series with the `backend` dimension alone);
 * with an endpoint, the slower of the two backends.
 */
function requestLatencyP99(withEndpoint: boolean): IMetric {
  const p99 = { statistic: Stats.p(99), period: Duration.minutes(5) };
  const lambda = backendMetric(METRICS.latency, "lambda", p99);
  if (!withEndpoint) return lambda;
  return new MathExpression({
    expression: "MAX([lambda, sagemaker])",
    usingMetrics: { lambda, sagemaker: backendMetric(METRICS.latency, "sagemaker", p99) },
    label: "Request latency p99 (slower backend)",
    period: Duration.minutes(5),
  });
}

function resolveSizing(props: MaasServiceStackProps): Sizing {
  const sizing: Sizing = {
    memoryMb: props.inferenceMemoryMb ?? 3008,
    ephemeralMb: props.ephemeralStorageMb ?? 4096,
    lambdaMaxModelBytes: props.lambdaMaxModelBytes ?? 512 * MiB,
    maxModelBytes: props.maxModelBytes ?? 2048 * MiB,
    provisionedConcurrency: props.provisionedConcurrency ?? 0,
    preloadModels: props.preloadModels ?? [],
    registerTimeout: props.registerTimeout ?? Duration.minutes(15),
    optimizeTimeout: props.optimizeTimeout ?? Duration.minutes(15),
    optimizeMaxModelBytes: props.optimizeMaxModelBytes ?? 1024 * MiB,
    optimizeMaxConcurrency: props.optimizeMaxConcurrency ?? 5,
    jobsMemoryMb: props.jobsMemoryMb ?? 10_240,
    jobsMaxConcurrency: props.jobsMaxConcurrency ?? 10,
  };
  for (const key of ["lambdaMaxModelBytes", "maxModelBytes", "optimizeMaxModelBytes"] as const) {
    if (!Number.isSafeInteger(sizing[key]) || sizing[key] < 1) {
      throw new Error(`${key} must be a positive integer, got ${sizing[key]}`);
    }
  }
  if (sizing.lambdaMaxModelBytes > sizing.maxModelBytes) {
    throw new Error(
      `lambdaMaxModelBytes (${sizing.lambdaMaxModelBytes}) must not exceed maxModelBytes (${sizing.maxModelBytes})`,
    );
  }
  const cacheBytes = artifactCacheBytes(sizing.ephemeralMb);
  if (sizing.lambdaMaxModelBytes > cacheBytes) {
    throw new Error(
      `lambdaMaxModelBytes (${sizing.lambdaMaxModelBytes}) must fit the inference artifact cache: 80% of ephemeralStorageMb (${cacheBytes} bytes)`,
    );
  }
  // Registration copies each upload to its content-addressed key with one CopyObject, which S3 caps at 5 GiB.
  if (sizing.maxModelBytes > MAX_SINGLE_COPY_BYTES) {
    throw new Error(
      `maxModelBytes (${sizing.maxModelBytes}) must be at most ${MAX_SINGLE_COPY_BYTES}: registration copies each model with one S3 CopyObject (5 GiB at most)`,
    );
  }
  const registerLimitMb = LAMBDA_EPHEMERAL_RANGE_MB.max - REGISTER_TMP_HEADROOM_MB;
  if (sizing.maxModelBytes > registerLimitMb * MiB) {
    throw new Error(
      `maxModelBytes (${sizing.maxModelBytes}) must be at most ${registerLimitMb * MiB}: the register function stages each upload in its /tmp (10240 MiB at most, ${REGISTER_TMP_HEADROOM_MB} MiB kept free)`,
    );
  }
  if (!Number.isInteger(sizing.provisionedConcurrency) || sizing.provisionedConcurrency < 0) {
    throw new Error(
      `provisionedConcurrency must be a non-negative integer, got ${sizing.provisionedConcurrency}`,
    );
  }
  if (sizing.preloadModels.length > 0 && sizing.provisionedConcurrency === 0) {
    throw new Error(
      "preloadModels needs provisionedConcurrency > 0: only provisioned environments load models before the first request",
    );
  }
  for (const name of sizing.preloadModels) {
    if (!MODEL_NAME_PATTERN.test(name)) {
      throw new Error(
        `preloadModels: '${name}' is not a model name (1-64 lower-case letters, digits, '-', '_' or '.', starting with a letter or digit)`,
      );
    }
  }
  const visibility = props.queues.visibilityTimeout.toSeconds();
  for (const [name, limit] of [
    ["register", sizing.registerTimeout],
    ["optimize", sizing.optimizeTimeout],
  ] as const) {
    const timeout = limit.toSeconds();
    if (visibility < 6 * timeout) {
      throw new Error(
        `the ${name} queue's visibility timeout (${visibility} s) must be at least 6 times the ${name} function's timeout (${timeout} s)`,
      );
    }
  }
  for (const key of ["optimizeMaxConcurrency", "jobsMaxConcurrency"] as const) {
    const concurrency = sizing[key];
    if (!Number.isInteger(concurrency) || concurrency < 2 || concurrency > 1000) {
      throw new Error(
        `${key} must be an integer from 2 to 1000 (SQS event source maximum concurrency), got ${concurrency}`,
      );
    }
  }
  const minRegister = MIN_REGISTER_TIMEOUT_WITH_SAGEMAKER.toSeconds();
  if (props.sagemaker !== undefined && sizing.registerTimeout.toSeconds() < minRegister) {
    throw new Error(
      `registerTimeout (${sizing.registerTimeout.toSeconds()} s) must be at least ${minRegister} s with SageMaker: registration streams each large model's archive to the endpoint's model prefix`,
    );
  }
  return sizing;
}

function artifactCacheBytes(ephemeralMb: number): number {
  return Math.floor(ephemeralMb * MiB * ARTIFACT_CACHE_SHARE);
}

/** Four copies of the largest optimizable model, within Lambda's bounds (larger limits get all 10 GiB). */
function optimizeEphemeralMb(optimizeMaxModelBytes: number): number {
  const needed = Math.ceil((OPTIMIZE_TMP_MODEL_COPIES * optimizeMaxModelBytes) / MiB);
  return Math.min(LAMBDA_EPHEMERAL_RANGE_MB.max, Math.max(LAMBDA_EPHEMERAL_RANGE_MB.min, needed));
}

/** Room for the largest accepted upload plus headroom, within Lambda's bounds. */
function registerEphemeralMb(maxModelBytes: number): number {
  const needed = Math.ceil(maxModelBytes / MiB) + REGISTER_TMP_HEADROOM_MB;
  return Math.min(LAMBDA_EPHEMERAL_RANGE_MB.max, Math.max(LAMBDA_EPHEMERAL_RANGE_MB.min, needed));
}
