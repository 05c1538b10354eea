import { BatchProcessor, EventType, processPartialResponse } from "@aws-lambda-powertools/batch";
import type { Logger } from "@aws-lambda-powertools/logger";
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from "aws-lambda";

export type SqsBatchHandler = (event: SQSEvent, context?: Context) => Promise<SQSBatchResponse>;

/**
 * An SQS-fed function: its records one at a time (each handler is idempotent, but a version's steps
 * are ordered), a record that throws reported as a batch item failure for SQS to retry or dead-letter.
 */
export function sqsBatchHandler(
  handleRecord: (record: SQSRecord) => Promise<void>,
  logger: Logger,
): SqsBatchHandler {
  return async (event, context) => {
    if (context) logger.addContext(context);
    return processPartialResponse(event, handleRecord, new BatchProcessor(EventType.SQS), {
      context,
      processInParallel: false,
      // A batch that failed whole is still answered item by item, as SQS retries it the same way.
      throwOnFullBatchFailure: false,
    });
  };
}
