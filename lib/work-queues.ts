import type { Duration } from "aws-cdk-lib";
import { Queue, QueueEncryption } from "aws-cdk-lib/aws-sqs";
import type { Construct } from "constructs";
import { acknowledge } from "./nag.ts";

/** SQS's longest visibility timeout. */
const MAX_VISIBILITY_SECONDS = 12 * 60 * 60;

/** Rejects a visibility timeout SQS would refuse and a receive count its redrive policy would. */
export function validateRedrive(visibilityTimeout: Duration, maxReceiveCount: number): void {
  const visibilitySeconds = visibilityTimeout.toSeconds();
  if (visibilitySeconds < 1 || visibilitySeconds > MAX_VISIBILITY_SECONDS) {
    throw new Error(`visibilityTimeout must be from 1 second to 12 hours, got ${visibilitySeconds} s`);
  }
  if (!Number.isInteger(maxReceiveCount) || maxReceiveCount < 1 || maxReceiveCount > 1000) {
    throw new Error(`maxReceiveCount must be an integer from 1 to 1000, got ${maxReceiveCount}`);
  }
}

export interface WorkQueueProps {
  readonly deadLetterQueue: Queue;
  readonly maxReceiveCount: number;
  readonly visibilityTimeout: Duration;
  /** @default SQS's 4 days */
  readonly retentionPeriod?: Duration;
}

/** A queue a function consumes: SQS-managed encryption, TLS only, dead letters after `maxReceiveCount`. */
export function workQueue(scope: Construct, id: string, props: WorkQueueProps): Queue {
  return new Queue(scope, id, {
    encryption: QueueEncryption.SQS_MANAGED,
    enforceSSL: true,
    visibilityTimeout: props.visibilityTimeout,
    ...(props.retentionPeriod === undefined ? {} : { retentionPeriod: props.retentionPeriod }),
    deadLetterQueue: { queue: props.deadLetterQueue, maxReceiveCount: props.maxReceiveCount },
  });
}

/**
 * A dead-letter queue: SQS-managed encryption, TLS only, kept `retentionPeriod`. A function that drains
 * it needs `visibilityTimeout` at least its own timeout (Lambda refuses the event source otherwise).
 */
export function deadLetterQueue(
  scope: Construct,
  id: string,
  retentionPeriod: Duration,
  visibilityTimeout?: Duration,
): Queue {
  const queue = new Queue(scope, id, {
    encryption: QueueEncryption.SQS_MANAGED,
    enforceSSL: true,
    retentionPeriod,
    ...(visibilityTimeout === undefined ? {} : { visibilityTimeout }),
  });
  acknowledge(
    queue,
    "AwsSolutions-SQS3",
    "This queue is itself a dead-letter queue; an alarm watches what reaches it, for an operator to look at.",
  );
  acknowledge(
    queue,
    "Serverless-SQSRedrivePolicy",
    "This queue is itself a dead-letter queue; redriving it further would hide failures.",
  );
  return queue;
}
