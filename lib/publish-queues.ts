import { Duration, Stack } from "aws-cdk-lib";
import { type Bucket, EventType } from "aws-cdk-lib/aws-s3";
import { SqsDestination } from "aws-cdk-lib/aws-s3-notifications";
import type { Queue } from "aws-cdk-lib/aws-sqs";
import { Construct } from "constructs";
import { MODELS_PREFIX } from "./model-bucket.ts";
import { acknowledgeChild } from "./nag.ts";
import { deadLetterQueue, validateRedrive, workQueue } from "./work-queues.ts";

/** aws-s3's fixed id for its notifications handler (a stack singleton). */
const NOTIFICATIONS_HANDLER_ID = "BucketNotificationsHandler050a0587b7544547bf325f094a3db834";

/** The object names that start a registration; anything else under `models/` is ignored. */
export const REGISTER_SUFFIXES = ["model.onnx", "maas.json"] as const;

export interface PublishQueuesProps {
  /** Uploads under `models/` in this bucket are announced on the register queue. */
  readonly bucket: Bucket;
  /**
   * Visibility timeout of the register and optimize queues; keep it at least six times the timeout of
   * the function that consumes each (AWS's guidance for SQS event sources).
   * @default Duration.minutes(90), for 15-minute functions
   */
  readonly visibilityTimeout?: Duration;
  /**
   * Receives before a message moves to its dead-letter queue.
   * @default 3
   */
  readonly maxReceiveCount?: number;
  /**
   * How long the dead-letter queues keep a message for an operator to look at.
   * @default Duration.days(14), SQS's maximum
   */
  readonly deadLetterRetention?: Duration;
}

/**
 * The publish pipeline's queues: S3 upload events -> register queue, register -> optimize queue, each
 * with a dead-letter queue. SQS-managed encryption and TLS-only access on all four.
 */
export class PublishQueues extends Construct {
  public readonly registerQueue: Queue;
  public readonly registerDeadLetterQueue: Queue;
  public readonly optimizeQueue: Queue;
  public readonly optimizeDeadLetterQueue: Queue;
  /** The visibility timeout both work queues were made with. */
  public readonly visibilityTimeout: Duration;
  public readonly maxReceiveCount: number;

  constructor(scope: Construct, id: string, props: PublishQueuesProps) {
    super(scope, id);
    this.visibilityTimeout = props.visibilityTimeout ?? Duration.minutes(90);
    this.maxReceiveCount = props.maxReceiveCount ?? 3;
    validateRedrive(this.visibilityTimeout, this.maxReceiveCount);
    const deadLetterRetention = props.deadLetterRetention ?? Duration.days(14);

    const redrive = (queue: Queue) => ({
      deadLetterQueue: queue,
      maxReceiveCount: this.maxReceiveCount,
      visibilityTimeout: this.visibilityTimeout,
    });
    this.registerDeadLetterQueue = deadLetterQueue(this, "RegisterDeadLetterQueue", deadLetterRetention);
    this.registerQueue = workQueue(this, "RegisterQueue", redrive(this.registerDeadLetterQueue));
    // Consumed by the optimize function, which records on each version what never finished: Lambda
    // wants a consumed queue's visibility timeout at least the function's timeout.
    this.optimizeDeadLetterQueue = deadLetterQueue(
      this,
      "OptimizeDeadLetterQueue",
      deadLetterRetention,
      this.visibilityTimeout,
    );
    this.optimizeQueue = workQueue(this, "OptimizeQueue", redrive(this.optimizeDeadLetterQueue));

    const destination = new SqsDestination(this.registerQueue);
    for (const suffix of REGISTER_SUFFIXES) {
      props.bucket.addEventNotification(EventType.OBJECT_CREATED, destination, {
        prefix: MODELS_PREFIX,
        suffix,
      });
    }
    // CDK's bucket-notifications handler, one per bucket stack, created by the first notification above.
    const notificationsHandler = Stack.of(props.bucket).node.tryFindChild(NOTIFICATIONS_HANDLER_ID);
    if (notificationsHandler) {
      acknowledgeChild(
        notificationsHandler,
        "Role",
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
        "CDK's S3 bucket-notifications custom resource handler: aws-s3 gives its role this managed policy (logs only); its S3 permission is scoped to the model bucket.",
      );
    }
  }
}
