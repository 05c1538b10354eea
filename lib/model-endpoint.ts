import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Aws, Duration, IgnoreMode, Names, Stack } from "aws-cdk-lib";
import {
  PredefinedMetric,
  ScalableTarget,
  ServiceNamespace,
  type TargetTrackingScalingPolicy,
} from "aws-cdk-lib/aws-applicationautoscaling";
import { Metric, type MetricOptions, Stats } from "aws-cdk-lib/aws-cloudwatch";
import { DockerImageAsset, Platform } from "aws-cdk-lib/aws-ecr-assets";
import { Grant, type IGrantable, PolicyStatement, Role, ServicePrincipal } from "aws-cdk-lib/aws-iam";
import { LogGroup, RetentionDays } from "aws-cdk-lib/aws-logs";
import { CfnEndpoint, CfnEndpointConfig, CfnModel } from "aws-cdk-lib/aws-sagemaker";
import { Construct } from "constructs";
import { METRICS_NAMESPACE } from "#core/metrics/names.ts";
import { ENDPOINT_MODELS_PREFIX, type ModelBucket } from "./model-bucket.ts";
import { acknowledgeChild } from "./nag.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** The serving container's Dockerfile, relative to the repository root (its build context). */
export const GPU_DOCKERFILE = "containers/gpu/Dockerfile";

/** How the inference function addresses the endpoint's models (its `MAAS_SAGEMAKER_MODE`). */
export type EndpointMode = "single-model" | "multi-model";

/** Where SageMaker puts the endpoint's host metrics (the execution role may write there only). */
const ENDPOINT_HOST_NAMESPACE = "/aws/sagemaker/Endpoints";

/** The one production variant; the name SageMaker's own tools use for a single-variant endpoint. */
export const VARIANT_NAME = "AllTraffic";

export interface ModelEndpointProps {
  /** The bucket whose `sagemaker/models/` prefix holds the model archives registration publishes. */
  readonly models: ModelBucket;
  /**
   * GPU types (`ml.g*`, `ml.p*`) make a single-model endpoint that fetches archives from S3 itself
   * (SageMaker's multi-model endpoints take no custom container on GPU instances); CPU types make a
   * multi-model endpoint.
   * @default "ml.g5.xlarge"
   */
  readonly instanceType?: string;
  /**
   * Fewest instances autoscaling keeps; a real-time endpoint cannot scale to zero.
   * @default 1
   */
  readonly minInstanceCount?: number;
  /** @default minInstanceCount */
  readonly initialInstanceCount?: number;
  /** @default the larger of 2 and initialInstanceCount */
  readonly maxInstanceCount?: number;
  /**
   * Target of the scaling policy, in invocations per instance per minute. Load-test to set it.
   * @default 600
   */
  readonly invocationsPerInstance?: number;
  /**
   * How long SageMaker waits for `GET /ping` after starting the container: the image is several GB.
   * @default Duration.minutes(10)
   */
  readonly containerStartupTimeout?: Duration;
  /**
   * The serving image.
   * @default - `containers/gpu/Dockerfile` built for linux/amd64 from the repository root at deploy
   */
  readonly image?: DockerImageAsset;
  /** @default RetentionDays.ONE_MONTH */
  readonly logRetention?: RetentionDays;
}

const INSTANCE_TYPE = /^ml\.[a-z][a-z0-9-]*\.[a-z0-9]+$/;
const GPU_FAMILY = /^ml\.[gp]\d/;
const NEURON_FAMILY = /^ml\.(inf|trn)\d/;
const STARTUP_RANGE_SECONDS = { min: 60, max: 3600 } as const;
const SCALING_ROLE =
  "aws-service-role/sagemaker.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpointVariant";

/**
 * A SageMaker real-time endpoint running the GPU serving container (`containers/gpu`) for
 * sagemaker-target versions: the image (a Docker asset, built at deploy), an execution role that can
 * pull it, read the model prefix and log to the endpoint's own log group, the model, endpoint config
 * and endpoint, and target-tracking autoscaling on invocations per instance.
 */
export class ModelEndpoint extends Construct {
  public readonly image: DockerImageAsset;
  public readonly role: Role;
  public readonly model: CfnModel;
  public readonly endpointConfig: CfnEndpointConfig;
  public readonly endpoint: CfnEndpoint;
  /** Where the container logs: created here so that it has a retention. */
  public readonly logGroup: LogGroup;
  public readonly scalableTarget: ScalableTarget;
  public readonly scalingPolicy: TargetTrackingScalingPolicy;
  public readonly instanceType: string;
  public readonly mode: EndpointMode;
  /** The endpoint's name, known before it exists (its log group is named after it). */
  public readonly endpointName: string;
  /** `s3://<bucket>/sagemaker/models/`: where the container (or SageMaker) finds model archives. */
  public readonly modelPrefixUri: string;

  constructor(scope: Construct, id: string, props: ModelEndpointProps) {
    super(scope, id);
    const settings = resolveSettings(props);
    this.instanceType = settings.instanceType;
    this.mode = GPU_FAMILY.test(settings.instanceType) ? "single-model" : "multi-model";
    this.modelPrefixUri = `s3://${props.models.bucket.bucketName}/${ENDPOINT_MODELS_PREFIX}`;

    this.image =
      props.image ??
      new DockerImageAsset(this, "Image", {
        directory: ROOT,
        file: GPU_DOCKERFILE,
        platform: Platform.LINUX_AMD64,
        ignoreMode: IgnoreMode.DOCKER,
        // The Dockerfile's own allowlist: without it the whole repository (node_modules) is staged.
        exclude: dockerIgnorePatterns(join(ROOT, `${GPU_DOCKERFILE}.dockerignore`)),
      });

    // Named here, not by CloudFormation: the log group and the role's log permissions must exist first.
    // Lower case, as SageMaker spells it in the endpoint's ARN.
    this.endpointName = Names.uniqueResourceName(this, { maxLength: 63, separator: "-" }).toLowerCase();
    this.logGroup = new LogGroup(this, "Logs", {
      logGroupName: `/aws/sagemaker/Endpoints/${this.endpointName}`,
      retention: props.logRetention ?? RetentionDays.ONE_MONTH,
    });

    this.role = new Role(this, "ExecutionRole", {
      assumedBy: new ServicePrincipal("sagemaker.amazonaws.com"),
      description: "serverless-maas SageMaker endpoint: pull the serving image, read model archives, log",
    });
    this.image.repository.grantPull(this.role);
    props.models.grantReadEndpointModels(this.role);
    this.logGroup.grantWrite(this.role);
    this.logGroup.grant(this.role, "logs:CreateLogGroup", "logs:DescribeLogStreams");
    // Instance metrics (CPU, GPU, memory, disk) of the endpoint's hosts, and the container's own request
    // and batch metrics (MAAS_CLOUDWATCH_METRICS) in the service's namespace.
    this.role.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ["cloudwatch:PutMetricData"],
        resources: ["*"],
        conditions: {
          StringEquals: { "cloudwatch:namespace": [ENDPOINT_HOST_NAMESPACE, METRICS_NAMESPACE] },
        },
      }),
    );
    acknowledgeChild(
      this.role,
      "DefaultPolicy",
      "AwsSolutions-IAM5[Resource::*]",
      "ecr:GetAuthorizationToken and cloudwatch:PutMetricData support no resource-level permissions; PutMetricData is limited to SageMaker's endpoint namespace and the service's metrics namespace by condition.",
    );

    // The container publishes its request and batch metrics itself: SageMaker's logs carry no EMF header.
    const metrics = { MAAS_CLOUDWATCH_METRICS: "1", AWS_REGION: Aws.REGION };
    const container: CfnModel.ContainerDefinitionProperty =
      this.mode === "single-model"
        ? {
            image: this.image.imageUri,
            mode: "SingleModel",
            // SageMaker copies model data only at endpoint creation: the container fetches each archive on first use.
            environment: { MAAS_MODEL_S3_URI: this.modelPrefixUri, ...metrics },
          }
        : {
            image: this.image.imageUri,
            mode: "MultiModel",
            modelDataUrl: this.modelPrefixUri,
            environment: metrics,
          };
    this.model = new CfnModel(this, "Model", {
      executionRoleArn: this.role.roleArn,
      primaryContainer: container,
    });
    // The role's policy (ECR pull, S3 read) must be in place before SageMaker uses the role.
    this.model.node.addDependency(this.role);

    // No KmsKeyId: hosts with NVMe instance storage (ml.g5, ml.g6, ml.p4d...) encrypt it in hardware and
    // CreateEndpointConfig rejects a key for them; EBS-backed hosts get SageMaker's AWS managed key.
    this.endpointConfig = new CfnEndpointConfig(this, "Config", {
      productionVariants: [
        {
          variantName: VARIANT_NAME,
          modelName: this.model.attrModelName,
          instanceType: settings.instanceType,
          initialInstanceCount: settings.initialInstanceCount,
          initialVariantWeight: 1,
          containerStartupHealthCheckTimeoutInSeconds: settings.containerStartupTimeout.toSeconds(),
        },
      ],
    });
    this.endpoint = new CfnEndpoint(this, "Endpoint", {
      endpointName: this.endpointName,
      endpointConfigName: this.endpointConfig.attrEndpointConfigName,
    });
    // SageMaker would otherwise create the log group itself, without retention, and ours would then fail.
    this.endpoint.node.addDependency(this.logGroup);

    this.scalableTarget = new ScalableTarget(this, "Scaling", {
      serviceNamespace: ServiceNamespace.SAGEMAKER,
      resourceId: `endpoint/${this.endpoint.attrEndpointName}/variant/${VARIANT_NAME}`,
      scalableDimension: "sagemaker:variant:DesiredInstanceCount",
      minCapacity: settings.minInstanceCount,
      maxCapacity: settings.maxInstanceCount,
      // The service-linked role, as Application Auto Scaling recommends; created with the first target.
      role: Role.fromRoleArn(
        this,
        "ScalingRole",
        Stack.of(this).formatArn({
          service: "iam",
          region: "",
          resource: "role",
          resourceName: SCALING_ROLE,
        }),
        { mutable: false },
      ),
    });
    this.scalingPolicy = this.scalableTarget.scaleToTrackMetric("InvocationsPerInstance", {
      predefinedMetric: PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
      targetValue: settings.invocationsPerInstance,
      // A new instance needs minutes to pull the image and pass /ping: wait that long before adding another.
      scaleOutCooldown: settings.containerStartupTimeout,
      scaleInCooldown: Duration.minutes(15),
    });
  }

  /** Invoke this endpoint, and no other. */
  public grantInvoke(grantee: IGrantable): Grant {
    return Grant.addToPrincipal({
      grantee,
      actions: ["sagemaker:InvokeEndpoint"],
      // Ref of AWS::SageMaker::Endpoint is its ARN, as SageMaker spells it.
      resourceArns: [this.endpoint.ref],
    });
  }

  /** A metric of the endpoint's variant in `AWS/SageMaker`. */
  public metric(metricName: string, props?: MetricOptions): Metric {
    return this.variantMetric("AWS/SageMaker", metricName, props);
  }

  /**
   * A metric of the endpoint's hosts in `/aws/sagemaker/Endpoints` (CPUUtilization, MemoryUtilization,
   * GPUUtilization, GPUMemoryUtilization, DiskUtilization), in percent.
   */
  public metricHost(metricName: string, props?: MetricOptions): Metric {
    return this.variantMetric(ENDPOINT_HOST_NAMESPACE, metricName, props);
  }

  private variantMetric(namespace: string, metricName: string, props?: MetricOptions): Metric {
    return new Metric({
      namespace,
      metricName,
      dimensionsMap: { EndpointName: this.endpoint.attrEndpointName, VariantName: VARIANT_NAME },
      period: Duration.minutes(5),
      ...props,
    });
  }

  /** Invocations the container answered with a 5xx, summed. */
  public metricInvocation5xxErrors(props?: MetricOptions): Metric {
    return this.metric("Invocation5XXErrors", { statistic: Stats.SUM, ...props });
  }

  /** Time the container took to answer, in microseconds; p90 by default. */
  public metricModelLatency(props?: MetricOptions): Metric {
    return this.metric("ModelLatency", { statistic: Stats.p(90), ...props });
  }
}

interface Settings {
  readonly instanceType: string;
  readonly initialInstanceCount: number;
  readonly minInstanceCount: number;
  readonly maxInstanceCount: number;
  readonly invocationsPerInstance: number;
  readonly containerStartupTimeout: Duration;
}

function resolveSettings(props: ModelEndpointProps): Settings {
  const minInstanceCount = props.minInstanceCount ?? 1;
  const initialInstanceCount = props.initialInstanceCount ?? minInstanceCount;
  const settings: Settings = {
    instanceType: props.instanceType ?? "ml.g5.xlarge",
    initialInstanceCount,
    minInstanceCount,
    maxInstanceCount: props.maxInstanceCount ?? Math.max(2, initialInstanceCount),
    invocationsPerInstance: props.invocationsPerInstance ?? 600,
    containerStartupTimeout: props.containerStartupTimeout ?? Duration.minutes(10),
  };
  const { instanceType } = settings;
  if (!INSTANCE_TYPE.test(instanceType)) {
    throw new Error(
      `SageMaker instanceType '${instanceType}' is not a SageMaker instance type (ml.<family>.<size>, e.g. ml.g5.xlarge)`,
    );
  }
  if (NEURON_FAMILY.test(instanceType)) {
    throw new Error(
      `SageMaker instanceType '${instanceType}': Inferentia and Trainium need a Neuron build of the serving container; use a GPU (ml.g*, ml.p*) or a CPU type`,
    );
  }
  for (const key of ["minInstanceCount", "initialInstanceCount", "maxInstanceCount"] as const) {
    if (!Number.isInteger(settings[key]) || settings[key] < 1) {
      throw new Error(`SageMaker ${key} must be a positive integer, got ${settings[key]}`);
    }
  }
  const { initialInstanceCount: initial, minInstanceCount: min, maxInstanceCount: max } = settings;
  if (min > max) {
    throw new Error(`SageMaker minInstanceCount (${min}) must not exceed maxInstanceCount (${max})`);
  }
  if (initial < min || initial > max) {
    throw new Error(
      `SageMaker initialInstanceCount (${initial}) must be from minInstanceCount (${min}) to maxInstanceCount (${max})`,
    );
  }
  if (!(Number.isFinite(settings.invocationsPerInstance) && settings.invocationsPerInstance > 0)) {
    throw new Error(
      `SageMaker invocationsPerInstance must be a positive number, got ${settings.invocationsPerInstance}`,
    );
  }
  const startup = settings.containerStartupTimeout.toSeconds();
  if (startup < STARTUP_RANGE_SECONDS.min || startup > STARTUP_RANGE_SECONDS.max) {
    throw new Error(
      `SageMaker containerStartupTimeout must be from ${STARTUP_RANGE_SECONDS.min} to ${STARTUP_RANGE_SECONDS.max} s, got ${startup} s`,
    );
  }
  return settings;
}

/** The patterns of a `.dockerignore` file: one a line, without comments and blank lines. */
export function dockerIgnorePatterns(path: string): string[] {
  return readFileSync(path, "utf8")
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line.length > 0 && !line.startsWith("#"));
}
