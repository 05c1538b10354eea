import { Duration } from "aws-cdk-lib";
import type { RestApi } from "aws-cdk-lib/aws-apigateway";
import {
  Alarm,
  ComparisonOperator,
  type IMetric,
  type MetricOptions,
  Stats,
  TreatMissingData,
} from "aws-cdk-lib/aws-cloudwatch";
import { SnsAction } from "aws-cdk-lib/aws-cloudwatch-actions";
import type { IFunction } from "aws-cdk-lib/aws-lambda";
import { Topic } from "aws-cdk-lib/aws-sns";
import { EmailSubscription } from "aws-cdk-lib/aws-sns-subscriptions";
import type { IQueue } from "aws-cdk-lib/aws-sqs";
import { Construct } from "constructs";
import { apiErrorRate } from "./maas-metrics.ts";
import { acknowledge } from "./nag.ts";

export interface MaasAlarmsProps {
  /** Queues whose messages mean a failure an operator must look at, by a short name. */
  readonly deadLetterQueues: Readonly<Record<string, IQueue>>;
  /**
   * Dead-letter queues that a function drains (recording each failure where it belongs), by a short
   * name: their depth stays near 0, so the alarm counts the messages received from them instead.
   * @default {}
   */
  readonly drainedDeadLetterQueues?: Readonly<Record<string, IQueue>>;
  readonly api: RestApi;
  readonly inference: IFunction;
  /**
   * Queue-fed functions, by a short name: alarm on failed invocations (crashes, timeouts). Their
   * messages are retried and dead-lettered too; this alarm fires on the first failure.
   * @default {}
   */
  readonly workers?: Readonly<Record<string, IFunction>>;
  /**
   * The SageMaker endpoint, when there is one: alarm on its 5xx answers and its model latency.
   * @default - no endpoint alarms
   */
  readonly endpoint?: EndpointMetrics;
  /**
   * p90 model latency of the endpoint above which its alarm fires (two 5-minute periods in a row).
   * @default Duration.seconds(10): well inside the 25 s the inference function waits for SageMaker
   */
  readonly modelLatencyThreshold?: Duration;
  /**
   * Share of the API's requests answered 5xx, in percent, above which its alarm fires (two 5-minute
   * periods in a row).
   * @default 5
   */
  readonly apiErrorRateThreshold?: number;
  /**
   * The p99 of the inference function's end-to-end request latency (`RequestLatency`), every model
   * together, in milliseconds: alarm when it passes `requestLatencyThreshold`.
   * @default - no request latency alarm
   */
  readonly requestLatency?: IMetric;
  /**
   * p99 of `requestLatency` above which its alarm fires (two 5-minute periods in a row).
   * @default Duration.seconds(5)
   */
  readonly requestLatencyThreshold?: Duration;
  /**
   * Subscribe this address to an SNS topic that every alarm notifies.
   * @default - no topic: alarms only change state
   */
  readonly alarmEmail?: string;
}

/** What the alarms read from a SageMaker endpoint (`ModelEndpoint`). */
export interface EndpointMetrics {
  metricInvocation5xxErrors(props?: MetricOptions): IMetric;
  /** In microseconds, as SageMaker reports it. */
  metricModelLatency(props?: MetricOptions): IMetric;
}

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

/**
 * The alarms an operator of the service needs: anything in a dead-letter queue, the API's 5xx rate,
 * the inference function's p99 request latency, errors and throttles, queue-fed function errors,
 * SageMaker endpoint 5xx and latency; optionally mailed through an SNS topic.
 */
export class MaasAlarms extends Construct {
  public readonly alarms: readonly Alarm[];
  /** The topic alarms notify, when `alarmEmail` is given. */
  public readonly topic?: Topic;

  constructor(scope: Construct, id: string, props: MaasAlarmsProps) {
    super(scope, id);
    if (props.alarmEmail !== undefined && !EMAIL.test(props.alarmEmail)) {
      throw new Error(`alarmEmail '${props.alarmEmail}' is not an email address`);
    }
    const latencyThreshold = props.modelLatencyThreshold ?? Duration.seconds(10);
    if (latencyThreshold.toMilliseconds() <= 0) {
      throw new Error("modelLatencyThreshold must be positive");
    }

    const errorRateThreshold = props.apiErrorRateThreshold ?? 5;
    if (!(errorRateThreshold > 0 && errorRateThreshold <= 100)) {
      throw new Error(
        `apiErrorRateThreshold must be a percentage above 0 and at most 100, got ${errorRateThreshold}`,
      );
    }
    const requestLatencyThreshold = props.requestLatencyThreshold ?? Duration.seconds(5);
    if (requestLatencyThreshold.toMilliseconds() <= 0) {
      throw new Error("requestLatencyThreshold must be positive");
    }

    const alarms: Alarm[] = [];
    const whenAny = (alarmId: string, metric: IMetric, description: string) => {
      const alarm = new Alarm(this, alarmId, {
        metric,
        threshold: 0,
        comparisonOperator: ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: TreatMissingData.NOT_BREACHING,
        alarmDescription: description,
      });
      alarms.push(alarm);
    };

    for (const [name, queue] of Object.entries(props.deadLetterQueues)) {
      whenAny(
        `${name}DeadLetters`,
        queue.metricApproximateNumberOfMessagesVisible({
          period: Duration.minutes(1),
          statistic: Stats.MAXIMUM,
        }),
        `Messages in the ${name} dead-letter queue: they failed ${name} repeatedly; inspect and redrive.`,
      );
    }
    for (const [name, queue] of Object.entries(props.drainedDeadLetterQueues ?? {})) {
      whenAny(
        `${name}DeadLetters`,
        queue.metricNumberOfMessagesReceived({ period: Duration.minutes(5), statistic: Stats.SUM }),
        `Messages reached the ${name} dead-letter queue: they failed ${name} on every receive; the function that drains it recorded each failure (see its log).`,
      );
    }
    // A rate, not a count: a 503 for a model still loading or a 504 for a slow one is an answer, not an outage.
    const apiErrorRateAlarm = new Alarm(this, "Api5xxRate", {
      metric: apiErrorRate(props.api, Duration.minutes(5), "5xx answers (% of requests)"),
      threshold: errorRateThreshold,
      comparisonOperator: ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 2,
      treatMissingData: TreatMissingData.NOT_BREACHING,
      alarmDescription: `More than ${errorRateThreshold}% of the API's requests answered 5xx for 10 minutes: see the dashboard's failures by class (internal, timeout, not ready) and the inference function's log for the models and errors behind them.`,
    });
    alarms.push(apiErrorRateAlarm);
    if (props.requestLatency !== undefined) {
      const latency = new Alarm(this, "RequestLatency", {
        metric: props.requestLatency,
        threshold: requestLatencyThreshold.toMilliseconds(),
        comparisonOperator: ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 2,
        treatMissingData: TreatMissingData.NOT_BREACHING,
        alarmDescription: `The inference function's p99 request latency was above ${requestLatencyThreshold.toHumanString()} for 10 minutes: find the slow model and phase on the dashboard's latency rows (artifact fetch and session create mean cold models: provisioned concurrency and preloading; run means a slow model: more memory, or the GPU endpoint).`,
      });
      alarms.push(latency);
    }
    whenAny(
      "InferenceErrors",
      props.inference.metricErrors({ period: Duration.minutes(5), statistic: Stats.SUM }),
      "The inference function failed invocations (crash or timeout, not 4xx answers): find the error in its log group (the dashboard's Lambda row shows when) and the model it served.",
    );
    whenAny(
      "InferenceThrottles",
      props.inference.metricThrottles({ period: Duration.minutes(5), statistic: Stats.SUM }),
      "The inference function was throttled: raise reserved/account concurrency or lower API throttling.",
    );
    for (const [name, fn] of Object.entries(props.workers ?? {})) {
      whenAny(
        `${name}Errors`,
        fn.metricErrors({ period: Duration.minutes(5), statistic: Stats.SUM }),
        `The ${name} function failed invocations (crash or timeout): find the error in its log group; its messages are retried, then dead-lettered.`,
      );
    }
    if (props.endpoint !== undefined) {
      whenAny(
        "Endpoint5xx",
        props.endpoint.metricInvocation5xxErrors({ period: Duration.minutes(5), statistic: Stats.SUM }),
        "The SageMaker endpoint's container answered 5xx (model error, out of memory, crash); see its log group.",
      );
      const latency = new Alarm(this, "EndpointModelLatency", {
        metric: props.endpoint.metricModelLatency({ period: Duration.minutes(5), statistic: Stats.p(90) }),
        // ModelLatency is in microseconds.
        threshold: latencyThreshold.toMilliseconds() * 1000,
        comparisonOperator: ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 2,
        treatMissingData: TreatMissingData.NOT_BREACHING,
        alarmDescription: `The SageMaker endpoint's p90 model latency was above ${latencyThreshold.toHumanString()} for 10 minutes: scale out, or look for a slow model.`,
      });
      alarms.push(latency);
    }
    this.alarms = alarms;

    if (props.alarmEmail !== undefined) {
      this.topic = new Topic(this, "Topic", { displayName: "serverless-maas alarms", enforceSSL: true });
      const subscription = this.topic.addSubscription(new EmailSubscription(props.alarmEmail));
      const action = new SnsAction(this.topic);
      for (const alarm of alarms) {
        alarm.addAlarmAction(action);
        alarm.addOkAction(action);
      }
      acknowledge(
        subscription,
        "Serverless-SNSRedrivePolicy",
        "An email subscription: undeliverable alarm mail has nowhere useful to go.",
      );
    }
  }
}
