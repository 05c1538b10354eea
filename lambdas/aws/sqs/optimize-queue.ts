import { SendMessageCommand, type SQSClient } from "@aws-sdk/client-sqs";
import type { OptimizeQueue } from "#core/registry/registration.ts";

export class SqsOptimizeQueue implements OptimizeQueue {
  readonly #sqs: SQSClient;
  readonly #queueUrl: string;

  constructor(sqs: SQSClient, queueUrl: string) {
    this.#sqs = sqs;
    this.#queueUrl = queueUrl;
  }

  async send(message: { name: string; version: number }): Promise<void> {
    await this.#sqs.send(
      new SendMessageCommand({ QueueUrl: this.#queueUrl, MessageBody: JSON.stringify(message) }),
    );
  }
}
