import { Duration } from "aws-cdk-lib";
import type { RestApi } from "aws-cdk-lib/aws-apigateway";
import { Alarm, ComparisonOperator, type IMetric, Stats, TreatMissingData } from "aws-cdk-lib/aws-cloudwatch";
import { SnsAction } from "aws-cdk-lib/aws-cloudwatch-actions";
import type { IFunction } from "aws-cdk-lib/aws-lambda";
import { Topic } from "aws-cdk-lib/aws-sns";
import { EmailSubscription } from "aws-cdk-lib/aws-sns-subscriptions";
import type { IQueue } from "aws-cdk-lib/aws-sqs";
import { Construct } from "constructs";
import { acknowledge } from "./nag.ts";

export interface MaasAlarmsProps {
  /** Queues whose messages mean a failure an operator must look at, by a short name. */
  readonly deadLetterQueues: Readonly<Record<string, IQueue>>;
  readonly api: RestApi;
  readonly inference: IFunction;
  /**
   * Subscribe this address to an SNS topic that every alarm notifies.
   * @default - no topic: alarms only change state
   */
  readonly alarmEmail?: string;
}

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

/**
 * The alarms an operator of the service needs: anything in a dead-letter queue, API 5xx responses,
 * inference function errors and throttles; optionally mailed through an SNS topic.
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
    whenAny(
      "Api5xx",
      props.api.metricServerError({ period: Duration.minutes(5), statistic: Stats.SUM }),
      "The API answered 5xx (handler crash, timeout or integration failure).",
    );
    whenAny(
      "InferenceErrors",
      props.inference.metricErrors({ period: Duration.minutes(5), statistic: Stats.SUM }),
      "The inference function failed invocations (crash or timeout, not 4xx answers).",
    );
    whenAny(
      "InferenceThrottles",
      props.inference.metricThrottles({ period: Duration.minutes(5), statistic: Stats.SUM }),
      "The inference function was throttled: raise reserved/account concurrency or lower API throttling.",
    );
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
