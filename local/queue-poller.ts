import {
  DeleteMessageBatchCommand,
  type Message,
  ReceiveMessageCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import type { SQSBatchResponse, SQSEvent } from "aws-lambda";

/**
 * Plays an SQS event source mapping: receives batches, invokes the function with the SQS event AWS
 * would send, deletes what succeeded and leaves the reported failures to reappear after the visibility
 * timeout (the queue's redrive policy moves them to the dead-letter queue after maxReceiveCount).
 */
export interface QueuePollerOptions {
  readonly sqs: SQSClient;
  readonly queueUrl: string;
  readonly queueArn: string;
  readonly handler: (event: SQSEvent) => Promise<SQSBatchResponse | undefined>;
  readonly batchSize?: number;
  readonly waitSeconds?: number;
  readonly onError: (error: unknown) => void;
}

export interface QueuePoller {
  /** Stops polling; resolves once the batch in progress (if any) is done. */
  stop(): Promise<void>;
}

function toSqsEvent(messages: readonly Message[], queueArn: string, region: string): SQSEvent {
  return {
    Records: messages.map((message) => ({
      messageId: message.MessageId ?? "",
      receiptHandle: message.ReceiptHandle ?? "",
      body: message.Body ?? "",
      attributes: {
        ApproximateReceiveCount: message.Attributes?.ApproximateReceiveCount ?? "1",
        SentTimestamp: message.Attributes?.SentTimestamp ?? String(Date.now()),
        SenderId: message.Attributes?.SenderId ?? "local",
        ApproximateFirstReceiveTimestamp:
          message.Attributes?.ApproximateFirstReceiveTimestamp ?? String(Date.now()),
      },
      messageAttributes: {},
      md5OfBody: message.MD5OfBody ?? "",
      eventSource: "aws:sqs",
      eventSourceARN: queueArn,
      awsRegion: region,
    })),
  };
}

export function startQueuePoller(options: QueuePollerOptions): QueuePoller {
  const { sqs, queueUrl } = options;
  const region = options.queueArn.split(":")[3] ?? "us-east-1";
  let stopped = false;

  async function pollOnce(): Promise<void> {
    const { Messages = [] } = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queueUrl,
        MaxNumberOfMessages: options.batchSize ?? 10,
        WaitTimeSeconds: options.waitSeconds ?? 1,
        MessageSystemAttributeNames: ["All"],
      }),
    );
    if (Messages.length === 0) return;
    let failed: Set<string>;
    try {
      const response = await options.handler(toSqsEvent(Messages, options.queueArn, region));
      failed = new Set((response?.batchItemFailures ?? []).map((failure) => failure.itemIdentifier));
    } catch (error) {
      options.onError(error);
      failed = new Set(Messages.map((message) => message.MessageId ?? ""));
    }
    const done = Messages.filter((message) => !failed.has(message.MessageId ?? ""));
    if (done.length === 0) return;
    await sqs.send(
      new DeleteMessageBatchCommand({
        QueueUrl: queueUrl,
        Entries: done.map((message, index) => ({
          Id: String(index),
          ReceiptHandle: message.ReceiptHandle ?? "",
        })),
      }),
    );
  }

  const loop = (async () => {
    while (!stopped) {
      await pollOnce().catch((error: unknown) => {
        if (!stopped) options.onError(error);
      });
    }
  })();

  return {
    async stop() {
      stopped = true;
      await loop;
    },
  };
}
