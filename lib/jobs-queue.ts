import { Duration } from "aws-cdk-lib";
import { Grant, type IGrantable } from "aws-cdk-lib/aws-iam";
import type { Queue } from "aws-cdk-lib/aws-sqs";
import { Construct } from "constructs";
import { deadLetterQueue, validateRedrive, workQueue } from "./work-queues.ts";

export interface JobsQueueProps {
  /**
   * Visibility timeout of the jobs queue and of its dead-letter queue, which the worker drains too;
   * keep it at least six times the worker's timeout (AWS's guidance for SQS event sources).
   */
  readonly visibilityTimeout: Duration;
  /**
   * Receives before a job's message moves to the dead-letter queue; the worker is told the same number
   * (its last receive records a failure instead of throwing).
   * @default 3
   */
  readonly maxReceiveCount?: number;
  /**
   * How long a job's message waits to be run; a job is not worth running once its record has expired.
   * @default Duration.days(4), SQS's default
   */
  readonly retentionPeriod?: Duration;
  /**
   * How long the dead-letter queue keeps a message.
   * @default Duration.days(14), SQS's maximum
   */
  readonly deadLetterRetention?: Duration;
}

/**
 * Asynchronous inference's queue: job ids from the inference function to the jobs worker, and a
 * dead-letter queue the worker drains to mark jobs that never finished `failed`. SQS-managed encryption
 * and TLS-only access on both.
 */
export class JobsQueue extends Construct {
  public readonly queue: Queue;
  public readonly deadLetterQueue: Queue;
  public readonly maxReceiveCount: number;

  constructor(scope: Construct, id: string, props: JobsQueueProps) {
    super(scope, id);
    this.maxReceiveCount = props.maxReceiveCount ?? 3;
    validateRedrive(props.visibilityTimeout, this.maxReceiveCount);
    // The worker consumes its dead letters: Lambda wants the queue hidden at least the function's timeout.
    this.deadLetterQueue = deadLetterQueue(
      this,
      "DeadLetterQueue",
      props.deadLetterRetention ?? Duration.days(14),
      props.visibilityTimeout,
    );
    this.queue = workQueue(this, "Queue", {
      deadLetterQueue: this.deadLetterQueue,
      maxReceiveCount: this.maxReceiveCount,
      visibilityTimeout: props.visibilityTimeout,
      retentionPeriod: props.retentionPeriod,
    });
  }

  /** Submit jobs: `sqs:SendMessage` on the jobs queue, nothing else (the URL comes from the environment). */
  public grantSubmit(grantee: IGrantable): Grant {
    return Grant.addToPrincipal({
      grantee,
      actions: ["sqs:SendMessage"],
      resourceArns: [this.queue.queueArn],
    });
  }
}
