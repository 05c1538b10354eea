import { CfnResource } from "aws-cdk-lib";
import { Template } from "aws-cdk-lib/assertions";
import type { IConstruct } from "constructs";
import { describe, expect, it } from "vitest";
import { METRICS_NAMESPACE } from "#core/metrics/names.ts";
import type { MaasFunction } from "../../lib/maas-function.ts";
import type { MaasServiceStack } from "../../lib/service-stack.ts";
import { maasStacks } from "./support.ts";
import {
  asArray,
  cdkPath,
  type PolicyStatement,
  permissionsOf,
  render,
  type TemplateResource,
} from "./template-helpers.ts";

const off = maasStacks();
const gpu = maasStacks({ context: { sagemaker: true } });
const cpu = maasStacks({
  context: {
    sagemaker: "true",
    sagemakerInstanceType: "ml.m5.xlarge",
    sagemakerMinInstanceCount: "2",
    sagemakerMaxInstanceCount: "6",
  },
});
const offTemplate = Template.fromStack(off.service);
const gpuTemplate = Template.fromStack(gpu.service);
const cpuTemplate = Template.fromStack(cpu.service);

/** The logical id of an L1 resource, or of an L2 construct's resource. */
const idIn = (stack: MaasServiceStack, construct: IConstruct) =>
  stack.getLogicalId(
    (CfnResource.isCfnResource(construct) ? construct : construct.node.defaultChild) as CfnResource,
  );
const only = (template: Template, type: string): TemplateResource => {
  const resources = Object.values(template.findResources(type)) as TemplateResource[];
  expect(resources, type).toHaveLength(1);
  return resources[0] as TemplateResource;
};
const variables = (template: Template, stack: MaasServiceStack, fn: MaasFunction): Record<string, unknown> =>
  template.findResources("AWS::Lambda::Function")[idIn(stack, fn)]?.Properties.Environment.Variables ?? {};
const endpointOf = (stack: MaasServiceStack) => {
  if (!stack.endpoint) throw new Error("no endpoint");
  return stack.endpoint;
};
const bucketOutput = (template: Template) => {
  const found = JSON.stringify(template.toJSON()).match(/PublishOutputFnGetAttModelsBucket\w+Arn\w+/);
  if (!found) throw new Error("no bucket ARN output");
  return found[0];
};

describe("without the sagemaker flag", () => {
  it("creates no SageMaker model, endpoint, role, log group or scaling", () => {
    for (const type of [
      "AWS::SageMaker::Model",
      "AWS::SageMaker::EndpointConfig",
      "AWS::SageMaker::Endpoint",
      "AWS::ApplicationAutoScaling::ScalableTarget",
      "AWS::ApplicationAutoScaling::ScalingPolicy",
    ]) {
      offTemplate.resourceCountIs(type, 0);
    }
    expect(off.service.endpoint).toBeUndefined();
    expect(JSON.stringify(offTemplate.toJSON())).not.toMatch(/sagemaker/i);
  });

  it("leaves the endpoint unset on inference, so sagemaker-target versions answer 503", () => {
    expect(variables(offTemplate, off.service, off.service.inference)).not.toHaveProperty(
      "MAAS_SAGEMAKER_ENDPOINT",
    );
    expect(variables(offTemplate, off.service, off.service.register)).not.toHaveProperty(
      "MAAS_SAGEMAKER_MODEL_PREFIX",
    );
  });
});

describe("SageMaker endpoint on a GPU instance (the default, ml.g5.xlarge)", () => {
  const endpoint = endpointOf(gpu.service);

  it("runs the serving image as a single model that fetches archives from the model prefix", () => {
    const model = only(gpuTemplate, "AWS::SageMaker::Model");
    expect(model.Properties.PrimaryContainer).toMatchObject({
      Mode: "SingleModel",
      Environment: { AWS_REGION: { Ref: "AWS::Region" } },
    });
    const container = model.Properties.PrimaryContainer as Record<string, unknown> & {
      Environment: Record<string, unknown>;
    };
    expect(container.ModelDataUrl).toBeUndefined();
    expect(render(container.Environment.MAAS_MODEL_S3_URI)).toMatch(
      /^s3:\/\/<PublishOutputRefModelsBucket\w+>\/sagemaker\/models\/$/,
    );
    expect(render(container.Image)).toContain(`:${endpoint.image.imageTag}`);
    expect(model.Properties.ExecutionRoleArn).toEqual({
      "Fn::GetAtt": [idIn(gpu.service, endpoint.role), "Arn"],
    });
  });

  it("creates the model only once its role may pull the image and read the prefix", () => {
    const [model] = Object.values(gpuTemplate.findResources("AWS::SageMaker::Model")) as {
      DependsOn?: string[];
    }[];
    const policy = endpoint.role.node.tryFindChild("DefaultPolicy");
    expect(model?.DependsOn).toEqual(
      expect.arrayContaining([idIn(gpu.service, endpoint.role), idIn(gpu.service, policy as IConstruct)]),
    );
  });

  it("serves one AllTraffic variant on ml.g5.xlarge with a long container startup check", () => {
    const config = only(gpuTemplate, "AWS::SageMaker::EndpointConfig");
    expect(config.Properties.ProductionVariants).toEqual([
      {
        VariantName: "AllTraffic",
        ModelName: { "Fn::GetAtt": [idIn(gpu.service, endpoint.model), "ModelName"] },
        InstanceType: "ml.g5.xlarge",
        InitialInstanceCount: 1,
        InitialVariantWeight: 1,
        ContainerStartupHealthCheckTimeoutInSeconds: 600,
      },
    ]);
  });

  it("names the endpoint before it exists and logs to a log group of its own with a retention", () => {
    const resource =
      gpuTemplate.findResources("AWS::SageMaker::Endpoint")[idIn(gpu.service, endpoint.endpoint)];
    expect(resource?.Properties).toEqual({
      EndpointName: endpoint.endpointName,
      EndpointConfigName: {
        "Fn::GetAtt": [idIn(gpu.service, endpoint.endpointConfig), "EndpointConfigName"],
      },
    });
    expect(endpoint.endpointName).toMatch(/^[a-z0-9](-*[a-z0-9]){0,62}$/);
    expect(resource?.DependsOn).toContain(idIn(gpu.service, endpoint.logGroup));
    gpuTemplate.hasResourceProperties("AWS::Logs::LogGroup", {
      LogGroupName: `/aws/sagemaker/Endpoints/${endpoint.endpointName}`,
      RetentionInDays: 30,
    });
  });

  it("scales the variant between 1 and 2 instances on invocations per instance", () => {
    const target = only(gpuTemplate, "AWS::ApplicationAutoScaling::ScalableTarget");
    expect(target.Properties).toMatchObject({
      ServiceNamespace: "sagemaker",
      ScalableDimension: "sagemaker:variant:DesiredInstanceCount",
      MinCapacity: 1,
      MaxCapacity: 2,
    });
    expect(render(target.Properties.ResourceId)).toBe(
      `endpoint/<${idIn(gpu.service, endpoint.endpoint)}.EndpointName>/variant/AllTraffic`,
    );
    expect(render(target.Properties.RoleARN)).toMatch(
      /:role\/aws-service-role\/sagemaker\.application-autoscaling\.amazonaws\.com\/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpointVariant$/,
    );
    const policy = only(gpuTemplate, "AWS::ApplicationAutoScaling::ScalingPolicy");
    expect(policy.Properties).toMatchObject({
      PolicyType: "TargetTrackingScaling",
      ScalingTargetId: { Ref: idIn(gpu.service, endpoint.scalableTarget) },
      TargetTrackingScalingPolicyConfiguration: {
        PredefinedMetricSpecification: { PredefinedMetricType: "SageMakerVariantInvocationsPerInstance" },
        TargetValue: 600,
        ScaleOutCooldown: 600,
        ScaleInCooldown: 900,
      },
    });
  });

  it("points inference at the endpoint in single-model mode, within API Gateway's 29 s", () => {
    expect(variables(gpuTemplate, gpu.service, gpu.service.inference)).toMatchObject({
      MAAS_SAGEMAKER_ENDPOINT: { "Fn::GetAtt": [idIn(gpu.service, endpoint.endpoint), "EndpointName"] },
      MAAS_SAGEMAKER_MODE: "single-model",
    });
    const inference =
      gpuTemplate.findResources("AWS::Lambda::Function")[idIn(gpu.service, gpu.service.inference)];
    expect(inference?.Properties.Timeout).toBeGreaterThanOrEqual(29);
  });

  it("lets inference and the jobs worker invoke this one endpoint, by its ARN, and nothing else of SageMaker", () => {
    for (const fn of [gpu.service.inference, gpu.service.jobsWorker]) {
      const role = idIn(gpu.service, fn.role as IConstruct);
      const sagemaker = permissionsOf(gpuTemplate, role).filter((line) => line.startsWith("sagemaker:"));
      expect(sagemaker, fn.node.id).toEqual([
        `sagemaker:InvokeEndpoint <${idIn(gpu.service, endpoint.endpoint)}>`,
      ]);
    }
    const statements = (Object.values(gpuTemplate.findResources("AWS::IAM::Policy")) as TemplateResource[])
      .flatMap((policy) => policy.Properties.PolicyDocument?.Statement ?? [])
      .filter((statement) => asArray(statement.Action).includes("sagemaker:InvokeEndpoint"));
    expect(statements).toHaveLength(2);
  });

  it("points the jobs worker at the endpoint as it points inference", () => {
    const worker = variables(gpuTemplate, gpu.service, gpu.service.jobsWorker);
    expect(worker).toMatchObject({
      MAAS_SAGEMAKER_ENDPOINT: { "Fn::GetAtt": [idIn(gpu.service, endpoint.endpoint), "EndpointName"] },
      MAAS_SAGEMAKER_MODE: "single-model",
    });
    expect(variables(cpuTemplate, cpu.service, cpu.service.jobsWorker)).toMatchObject({
      MAAS_SAGEMAKER_MODE: "multi-model",
    });
    expect(variables(offTemplate, off.service, off.service.jobsWorker)).not.toHaveProperty(
      "MAAS_SAGEMAKER_ENDPOINT",
    );
  });

  it("lets register publish archives under sagemaker/models/ and tells it the prefix", () => {
    const bucket = bucketOutput(gpuTemplate);
    const registerRole = idIn(gpu.service, gpu.service.register.role as IConstruct);
    const onPrefix = permissionsOf(gpuTemplate, registerRole).filter((line) => line.includes("sagemaker/"));
    expect(onPrefix).toEqual(
      [
        `s3:AbortMultipartUpload <${bucket}>/sagemaker/models/*`,
        `s3:GetObject <${bucket}>/sagemaker/models/*`,
        `s3:PutObject <${bucket}>/sagemaker/models/*`,
      ].sort(),
    );
    expect(permissionsOf(gpuTemplate, registerRole)).toContain(`s3:ListBucket <${bucket}>`);
    expect(variables(gpuTemplate, gpu.service, gpu.service.register)).toMatchObject({
      MAAS_SAGEMAKER_MODEL_PREFIX: "sagemaker/models/",
    });
    const register =
      gpuTemplate.findResources("AWS::Lambda::Function")[idIn(gpu.service, gpu.service.register)];
    expect(register?.Properties.Timeout).toBeGreaterThanOrEqual(300);
  });

  it("gives SageMaker's role the image pull, the model prefix, its log group and instance metrics only", () => {
    const role = idIn(gpu.service, endpoint.role);
    const bucket = bucketOutput(gpuTemplate);
    const logs = idIn(gpu.service, endpoint.logGroup);
    expect(permissionsOf(gpuTemplate, role)).toEqual(
      [
        ...["BatchCheckLayerAvailability", "BatchGetImage", "GetDownloadUrlForLayer"].map(
          (action) =>
            `ecr:${action} arn:<AWS::Partition>:ecr:<AWS::Region>:<AWS::AccountId>:repository/{"Fn::Sub":"cdk-hnb659fds-container-assets-\${AWS::AccountId}-\${AWS::Region}"}`,
        ),
        "ecr:GetAuthorizationToken *",
        `s3:GetObject <${bucket}>/sagemaker/models/*`,
        `s3:ListBucket <${bucket}>`,
        `logs:CreateLogStream <${logs}.Arn>`,
        `logs:PutLogEvents <${logs}.Arn>`,
        `logs:CreateLogGroup <${logs}.Arn>`,
        `logs:CreateLogGroup arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:<${logs}>`,
        `logs:DescribeLogStreams <${logs}.Arn>`,
        `logs:DescribeLogStreams arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:<${logs}>`,
        "cloudwatch:PutMetricData *",
      ].sort(),
    );
    const statements = (Object.values(gpuTemplate.findResources("AWS::IAM::Policy")) as TemplateResource[])
      .filter((policy) => policy.Properties.Roles?.some((candidate) => candidate.Ref === role))
      .flatMap((policy) => policy.Properties.PolicyDocument?.Statement ?? [])
      .map((statement) => statement as PolicyStatement & { Condition?: unknown });
    expect(statements.find((statement) => statement.Action === "s3:ListBucket")?.Condition).toEqual({
      StringLike: { "s3:prefix": ["sagemaker/models/*"] },
    });
    expect(
      statements.find((statement) => statement.Action === "cloudwatch:PutMetricData")?.Condition,
    ).toEqual({
      // SageMaker's own instance metrics, and the serving container's (names.ts METRICS_NAMESPACE).
      StringEquals: { "cloudwatch:namespace": ["/aws/sagemaker/Endpoints", METRICS_NAMESPACE] },
    });
    gpuTemplate.hasResourceProperties("AWS::IAM::Role", {
      AssumeRolePolicyDocument: {
        Statement: [
          { Action: "sts:AssumeRole", Effect: "Allow", Principal: { Service: "sagemaker.amazonaws.com" } },
        ],
      },
    });
  });

  it("grants no wildcard action, and '*' resources only where IAM has no resource-level permission", () => {
    // CDK's own BucketDeployment handler (the console's files) is left out: aws-cdk-lib writes its policy.
    const statements = (Object.values(gpuTemplate.findResources("AWS::IAM::Policy")) as TemplateResource[])
      .filter((policy) => !cdkPath(policy).includes("/Custom::CDKBucketDeployment"))
      .flatMap((policy) => policy.Properties.PolicyDocument?.Statement ?? []);
    for (const statement of statements) {
      for (const action of asArray(statement.Action)) expect(action).not.toContain("*");
      if (asArray(statement.Resource).map(render).includes("*")) {
        for (const action of asArray(statement.Action))
          expect(action).toMatch(
            /^(xray:|ecr:GetAuthorizationToken$|cloudwatch:PutMetricData$|cloudwatch:GetMetricData$)/,
          );
      }
    }
  });

  it("alarms on the endpoint's 5xx answers and its p90 model latency", () => {
    const alarms = Object.values(gpuTemplate.findResources("AWS::CloudWatch::Alarm")) as TemplateResource[];
    const dimensions = [
      {
        Name: "EndpointName",
        Value: { "Fn::GetAtt": [idIn(gpu.service, endpoint.endpoint), "EndpointName"] },
      },
      { Name: "VariantName", Value: "AllTraffic" },
    ];
    const byMetric = (name: string) =>
      alarms.find((alarm) => alarm.Properties.MetricName === name)?.Properties;
    expect(byMetric("Invocation5XXErrors")).toMatchObject({
      Namespace: "AWS/SageMaker",
      Dimensions: dimensions,
      Statistic: "Sum",
      Threshold: 0,
      ComparisonOperator: "GreaterThanThreshold",
    });
    expect(byMetric("ModelLatency")).toMatchObject({
      Namespace: "AWS/SageMaker",
      Dimensions: dimensions,
      ExtendedStatistic: "p90",
      // Microseconds: 10 s.
      Threshold: 10_000_000,
      EvaluationPeriods: 2,
    });
  });

  it("outputs the endpoint's name", () => {
    gpuTemplate.hasOutput("SageMakerEndpointName", {
      Value: { "Fn::GetAtt": [idIn(gpu.service, endpoint.endpoint), "EndpointName"] },
    });
  });

  it("keeps registration's S3 notifications on models/: the archives start nothing", () => {
    const notifications = Template.fromStack(gpu.stateful).findResources("Custom::S3BucketNotifications");
    const prefixes = Object.values(notifications).flatMap((resource) =>
      (
        resource.Properties.NotificationConfiguration.QueueConfigurations as {
          Filter: { Key: { FilterRules: { Name: string; Value: string }[] } };
        }[]
      ).flatMap((queue) =>
        queue.Filter.Key.FilterRules.filter((rule) => rule.Name === "prefix").map((rule) => rule.Value),
      ),
    );
    expect(prefixes.length).toBeGreaterThan(0);
    expect(new Set(prefixes)).toEqual(new Set(["models/"]));
  });
});

describe("SageMaker endpoint on a CPU instance", () => {
  const endpoint = endpointOf(cpu.service);

  it("is a multi-model endpoint whose model data URL is the model prefix", () => {
    const model = only(cpuTemplate, "AWS::SageMaker::Model");
    const container = model.Properties.PrimaryContainer as Record<string, unknown>;
    expect(container.Mode).toBe("MultiModel");
    expect(render(container.ModelDataUrl)).toMatch(
      /^s3:\/\/<PublishOutputRefModelsBucket\w+>\/sagemaker\/models\/$/,
    );
    // The container publishes its batching and request figures to CloudWatch in its region.
    expect(container.Environment).toEqual({
      MAAS_CLOUDWATCH_METRICS: "1",
      AWS_REGION: { Ref: "AWS::Region" },
    });
    expect(endpoint.mode).toBe("multi-model");
  });

  it("starts at the minimum on the instance type from context and scales to the maximum", () => {
    const config = only(cpuTemplate, "AWS::SageMaker::EndpointConfig");
    expect(config.Properties.ProductionVariants).toEqual([
      expect.objectContaining({ InstanceType: "ml.m5.xlarge", InitialInstanceCount: 2 }),
    ]);
    expect(only(cpuTemplate, "AWS::ApplicationAutoScaling::ScalableTarget").Properties).toMatchObject({
      MinCapacity: 2,
      MaxCapacity: 6,
    });
  });

  it("tells inference to send TargetModel (multi-model mode)", () => {
    expect(variables(cpuTemplate, cpu.service, cpu.service.inference)).toMatchObject({
      MAAS_SAGEMAKER_MODE: "multi-model",
    });
  });
});
