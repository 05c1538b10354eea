import { join } from "node:path";
import { CfnResource, Stack } from "aws-cdk-lib";
import { Template } from "aws-cdk-lib/assertions";
import type { IConstruct } from "constructs";
import { describe, expect, it } from "vitest";
import { FAILURE_REASONS, METRICS, METRICS_NAMESPACE } from "#core/metrics/names.ts";
import { MaasFunction } from "../../lib/maas-function.ts";
import { maasStacks, ROOT, testApp } from "./support.ts";
import { render, type TemplateResource } from "./template-helpers.ts";

const plain = maasStacks();
const plainTemplate = Template.fromStack(plain.service);
const gpu = maasStacks({
  context: {
    sagemaker: true,
    alarmEmail: "ops@example.com",
    requestLatencyAlarmMs: "2500",
    apiErrorRateAlarmPercent: 2,
  },
});
const gpuTemplate = Template.fromStack(gpu.service);

interface Widget {
  readonly type: string;
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly properties: {
    readonly title?: string;
    readonly markdown?: string;
    readonly metrics?: unknown[][];
    readonly alarms?: string[];
  };
}

/** The dashboard's widgets, from its body (a Fn::Join rendered with `<Id>` for each reference). */
function widgetsOf(template: Template): Widget[] {
  const dashboards = Object.values(
    template.findResources("AWS::CloudWatch::Dashboard"),
  ) as TemplateResource[];
  expect(dashboards).toHaveLength(1);
  const body = JSON.parse(render(dashboards[0]?.Properties.DashboardBody)) as { widgets: Widget[] };
  return body.widgets;
}

/** `namespace metricName dimension=value...` of every plain metric a widget graphs. */
const metricsOf = (widget: Widget): string[] =>
  (widget.properties.metrics ?? [])
    .filter((entry) => typeof entry[0] === "string")
    .map((entry) => {
      const [namespace, name, ...rest] = entry.filter((part) => typeof part === "string") as string[];
      const dimensions = [];
      for (let i = 0; i + 1 < rest.length; i += 2) dimensions.push(`${rest[i]}=${rest[i + 1]}`);
      return [namespace, name, ...dimensions].join(" ");
    });

/** The expressions (SEARCH and math) a widget graphs. */
const expressionsOf = (widget: Widget): string[] =>
  (widget.properties.metrics ?? []).flatMap((entry) =>
    entry
      .filter((part): part is { expression: string } => typeof part === "object" && part !== null)
      .flatMap((part) => (typeof part.expression === "string" ? [part.expression] : [])),
  );

const allMetrics = (template: Template) => widgetsOf(template).flatMap(metricsOf);
const allExpressions = (template: Template) => widgetsOf(template).flatMap(expressionsOf);
const search = (metricName: string, statistic: string, where = "") =>
  `SEARCH('Namespace="${METRICS_NAMESPACE}" MetricName="${metricName}"${where}', '${statistic}', 300)`;

const logicalId = (stack: Stack, construct: IConstruct) =>
  stack.getLogicalId(
    CfnResource.isCfnResource(construct) ? construct : (construct.node.defaultChild as CfnResource),
  );

describe("dashboard", () => {
  it("graphs every figure of the metric vocabulary through a SEARCH over the service's namespace", () => {
    const expressions = allExpressions(plainTemplate);
    for (const { name } of Object.values(METRICS)) {
      const searches = expressions.filter((expression) => expression.includes(`MetricName="${name}"`));
      expect(searches.length, name).toBeGreaterThan(0);
      for (const expression of searches) {
        expect(expression).toMatch(
          new RegExp(
            `^SEARCH\\('Namespace="${METRICS_NAMESPACE}" MetricName="${name}"( \\w+="\\w+")*', '\\w+', 300\\)$`,
          ),
        );
      }
    }
  });

  it("splits failures by each reason", () => {
    const expressions = allExpressions(plainTemplate);
    for (const reason of FAILURE_REASONS) {
      expect(expressions).toContain(search(METRICS.failures.name, "Sum", ` reason="${reason}"`));
    }
  });

  it("shows end-to-end and per-phase latency, sizes and durations at p50, p90 and p99", () => {
    const expressions = allExpressions(plainTemplate);
    const distributions = [
      METRICS.latency,
      METRICS.registryLatency,
      METRICS.queueLatency,
      METRICS.artifactFetchLatency,
      METRICS.sessionCreateLatency,
      METRICS.inputDecodeLatency,
      METRICS.runLatency,
      METRICS.outputEncodeLatency,
      METRICS.initDuration,
      METRICS.requestBytes,
      METRICS.responseBytes,
      METRICS.batchQueueDelay,
      METRICS.registrationDuration,
      METRICS.optimizationDuration,
      METRICS.jobDuration,
      METRICS.jobQueueWait,
    ];
    for (const { name } of distributions) {
      for (const percentile of ["p50", "p90", "p99"]) expect(expressions).toContain(search(name, percentile));
    }
    for (const { name } of [
      METRICS.requests,
      METRICS.successes,
      METRICS.failures,
      METRICS.coldStarts,
      METRICS.registrations,
      METRICS.optimizations,
      METRICS.jobs,
    ]) {
      expect(expressions).toContain(search(name, "Sum"));
    }
  });

  it("opens each row with a full-width text header, in the order of the layout", () => {
    const headers = widgetsOf(plainTemplate)
      .filter((widget) => widget.type === "text")
      .sort((a, b) => a.y - b.y);
    for (const header of headers) expect(header.width).toBe(24);
    expect(headers.map((header) => header.properties.markdown?.split("\n")[0])).toEqual([
      "## Alarms",
      "## Requests",
      "## Failures by class",
      "## Latency",
      "## Latency by phase",
      "## Cold starts",
      "## Payloads",
      "## GPU endpoint",
      "## Publishing",
      "## Asynchronous jobs",
      "## Queues",
      "## API Gateway",
      "## Lambda",
    ]);
  });

  it("is linked from the stack's outputs", () => {
    const dashboard = logicalId(plain.service, plain.service.dashboard.dashboard);
    expect(render(plainTemplate.findOutputs("DashboardUrl").DashboardUrl?.Value)).toBe(
      `https://console.aws.amazon.com/cloudwatch/home?region=<AWS::Region>#dashboards:name=<${dashboard}>`,
    );
  });

  it("keeps every widget inside the 24-column grid", () => {
    for (const widget of widgetsOf(gpuTemplate)) expect(widget.x + widget.width).toBeLessThanOrEqual(24);
  });

  it("shows the state of every alarm of the stack", () => {
    const [status] = widgetsOf(gpuTemplate).filter((widget) => widget.type === "alarm");
    const alarmIds = Object.keys(gpuTemplate.findResources("AWS::CloudWatch::Alarm"));
    expect(status?.properties.alarms?.map((arn) => arn.replace(/^<(.+)\.Arn>$/, "$1")).sort()).toEqual(
      alarmIds.sort(),
    );
  });

  it("graphs the depth of each queue and each dead-letter queue, and the age of each queue's oldest message", () => {
    const metrics = allMetrics(plainTemplate);
    const { stateful, service } = plain;
    const workQueues: [Stack, IConstruct][] = [
      [stateful, stateful.queues.registerQueue],
      [stateful, stateful.queues.optimizeQueue],
      [service, service.jobsQueue.queue],
    ];
    const deadLetterQueues: [Stack, IConstruct][] = [
      [stateful, stateful.queues.registerDeadLetterQueue],
      [stateful, stateful.queues.optimizeDeadLetterQueue],
      [service, service.jobsQueue.deadLetterQueue],
    ];
    // A queue of the stateful stack is named through a cross-stack output named after its logical id.
    const graphed = (metricName: string, [stack, queue]: [Stack, IConstruct]) =>
      metrics.some((metric) =>
        new RegExp(`^AWS/SQS ${metricName} QueueName=<[\\w.]*${logicalId(stack, queue)}[\\w.]*>$`).test(
          metric,
        ),
      );
    for (const queue of [...workQueues, ...deadLetterQueues]) {
      expect(graphed("ApproximateNumberOfMessagesVisible", queue), queue[1].node.path).toBe(true);
    }
    for (const queue of workQueues) {
      expect(graphed("ApproximateAgeOfOldestMessage", queue), queue[1].node.path).toBe(true);
    }
  });

  it("graphs API Gateway's requests, 4xx, 5xx and latency", () => {
    const metrics = allMetrics(plainTemplate);
    for (const name of ["Count", "4XXError", "5XXError", "Latency", "IntegrationLatency"]) {
      expect(metrics).toContain(`AWS/ApiGateway ${name} ApiName=Api`);
    }
  });

  it("graphs Lambda's invocations, errors, throttles, duration and concurrency of each function", () => {
    const metrics = allMetrics(plainTemplate);
    const service = plain.service;
    const functions: MaasFunction[] = [
      service.inference,
      service.jobsWorker,
      service.register,
      service.optimize,
      service.admin,
    ];
    for (const fn of functions) {
      for (const name of ["Invocations", "Errors", "Throttles", "Duration", "ConcurrentExecutions"]) {
        expect(metrics).toContain(`AWS/Lambda ${name} FunctionName=<${logicalId(service, fn)}>`);
      }
    }
  });

  it("graphs SageMaker's invocations, errors, latency and hosts only when there is an endpoint", () => {
    const endpoint = `EndpointName=<${logicalId(gpu.service, gpu.service.endpoint?.endpoint as IConstruct)}.EndpointName> VariantName=AllTraffic`;
    const metrics = allMetrics(gpuTemplate);
    for (const name of [
      "Invocations",
      "Invocation4XXErrors",
      "Invocation5XXErrors",
      "InvocationModelErrors",
      "ModelLatency",
      "OverheadLatency",
    ]) {
      expect(metrics).toContain(`AWS/SageMaker ${name} ${endpoint}`);
    }
    for (const name of ["CPUUtilization", "MemoryUtilization", "GPUUtilization", "GPUMemoryUtilization"]) {
      expect(metrics).toContain(`/aws/sagemaker/Endpoints ${name} ${endpoint}`);
    }
    expect(allMetrics(plainTemplate).filter((metric) => /sagemaker/i.test(metric))).toEqual([]);
    // The container's batching figures are there either way: they are part of the vocabulary.
    expect(allExpressions(plainTemplate)).toContain(search(METRICS.batchSize.name, "Average"));
  });
});

describe("alarms", () => {
  const alarms = (template: Template) =>
    Object.values(template.findResources("AWS::CloudWatch::Alarm")) as TemplateResource[];
  const errorRate = (template: Template) =>
    alarms(template).find((alarm) =>
      JSON.stringify(alarm.Properties.Metrics ?? []).includes("100 * errors / requests"),
    );
  const requestLatency = (template: Template) =>
    alarms(template).find((alarm) => JSON.stringify(alarm.Properties).includes(`"${METRICS.latency.name}"`));

  it("alarm when more than 5% of the API's requests answer 5xx for two periods", () => {
    const alarm = errorRate(plainTemplate)?.Properties;
    expect(alarm).toMatchObject({
      Threshold: 5,
      ComparisonOperator: "GreaterThanThreshold",
      EvaluationPeriods: 2,
      TreatMissingData: "notBreaching",
    });
    const queries = alarm?.Metrics as {
      Id: string;
      MetricStat?: { Metric: { MetricName: string }; Stat: string };
    }[];
    expect(
      queries
        .filter((query) => query.MetricStat)
        .map((query) => `${query.Id} ${query.MetricStat?.Metric.MetricName} ${query.MetricStat?.Stat}`)
        .sort(),
    ).toEqual(["errors 5XXError Sum", "requests Count Sum"]);
  });

  it("alarm when the p99 request latency of the Lambda backend, every model together, passes 5 s for two periods", () => {
    expect(requestLatency(plainTemplate)?.Properties).toMatchObject({
      Namespace: METRICS_NAMESPACE,
      MetricName: "RequestLatency",
      Dimensions: [{ Name: "backend", Value: "lambda" }],
      ExtendedStatistic: "p99",
      Period: 300,
      Threshold: 5000,
      ComparisonOperator: "GreaterThanThreshold",
      EvaluationPeriods: 2,
      TreatMissingData: "notBreaching",
    });
  });

  it("alarm on the slower backend's p99 request latency when there is an endpoint", () => {
    const queries = requestLatency(gpuTemplate)?.Properties.Metrics as {
      Id: string;
      Expression?: string;
      MetricStat?: { Metric: { MetricName: string; Dimensions: unknown }; Stat: string; Period: number };
    }[];
    expect(queries.find((query) => query.Expression)?.Expression).toBe("MAX([lambda, sagemaker])");
    for (const backend of ["lambda", "sagemaker"]) {
      expect(queries.find((query) => query.Id === backend)?.MetricStat).toEqual({
        Metric: {
          Namespace: METRICS_NAMESPACE,
          MetricName: "RequestLatency",
          Dimensions: [{ Name: "backend", Value: backend }],
        },
        Stat: "p99",
        Period: 300,
      });
    }
  });

  it("take their thresholds from context", () => {
    expect(errorRate(gpuTemplate)?.Properties.Threshold).toBe(2);
    expect(requestLatency(gpuTemplate)?.Properties.Threshold).toBe(2500);
  });

  it("watch the GPU endpoint's health only when there is one", () => {
    const names = (template: Template) => alarms(template).map((alarm) => alarm.Properties.MetricName);
    expect(names(gpuTemplate)).toEqual(expect.arrayContaining(["Invocation5XXErrors", "ModelLatency"]));
    expect(names(plainTemplate)).not.toContain("Invocation5XXErrors");
    expect(names(plainTemplate)).not.toContain("ModelLatency");
  });

  it("each say what to do, and treat missing data as not breaching", () => {
    for (const alarm of [...alarms(plainTemplate), ...alarms(gpuTemplate)]) {
      expect(String(alarm.Properties.AlarmDescription).length).toBeGreaterThan(60);
      expect(alarm.Properties.TreatMissingData).toBe("notBreaching");
    }
  });

  it("notify the alarm topic, the new ones included, when alarmEmail is set", () => {
    const topic = { Ref: logicalId(gpu.service, gpu.service.alarms.topic as IConstruct) };
    for (const alarm of [errorRate(gpuTemplate), requestLatency(gpuTemplate)]) {
      expect(alarm?.Properties.AlarmActions).toEqual([topic]);
      expect(alarm?.Properties.OKActions).toEqual([topic]);
    }
    expect(errorRate(plainTemplate)?.Properties.AlarmActions).toBeUndefined();
  });
});

describe("metrics configuration", () => {
  const variablesOf = (fn: MaasFunction) =>
    (
      plainTemplate.findResources("AWS::Lambda::Function")[logicalId(plain.service, fn)]?.Properties
        .Environment as { Variables?: Record<string, unknown> } | undefined
    )?.Variables ?? {};

  it("tells each function that emits metrics the namespace and its service name", () => {
    const service = plain.service;
    for (const [fn, name] of [
      [service.inference, "maas-inference"],
      [service.jobsWorker, "maas-jobs"],
      [service.register, "maas-register"],
      [service.optimize, "maas-optimize"],
    ] as const) {
      expect(variablesOf(fn)).toMatchObject({
        POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE,
        POWERTOOLS_SERVICE_NAME: name,
      });
    }
  });

  it("leaves the admin function, which emits none, without them", () => {
    expect(variablesOf(plain.service.admin)).not.toHaveProperty("POWERTOOLS_METRICS_NAMESPACE");
    expect(variablesOf(plain.service.admin)).not.toHaveProperty("POWERTOOLS_SERVICE_NAME");
  });

  it("merges the metrics variables under the caller's environment, which wins", () => {
    const stack = new Stack(testApp(), "Functions");
    const fn = new MaasFunction(stack, "Fn", {
      entry: join(ROOT, "test/infra/fixtures/echo-handler.ts"),
      withOnnxRuntime: false,
      metricsService: "maas-test",
      environment: { GREETING: "hello", POWERTOOLS_SERVICE_NAME: "maas-override" },
    });
    const variables =
      Template.fromStack(stack).findResources("AWS::Lambda::Function")[logicalId(stack, fn)]?.Properties
        .Environment.Variables;
    expect(variables).toEqual({
      POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE,
      POWERTOOLS_SERVICE_NAME: "maas-override",
      GREETING: "hello",
    });
  });

  it("grants no CloudWatch write permission: metrics leave through the functions' logs (EMF)", () => {
    const actions = JSON.stringify(plainTemplate.findResources("AWS::IAM::Policy")).match(/cloudwatch:\w+/g);
    // Only the admin function's read of the service's own metrics, for the console's charts.
    expect(actions).toEqual(["cloudwatch:GetMetricData"]);
  });
});
