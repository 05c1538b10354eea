import { Logger } from "@aws-lambda-powertools/logger";
import type { SQSEvent } from "aws-lambda";
import { describe, expect, it } from "vitest";
import type { JobRunner } from "#core/jobs/async-inference.ts";
import { createJobsHandler, retryDelaySeconds } from "#lambdas/jobs/handler.ts";

const DEAD_LETTER_ARN = "arn:aws:sqs:us-east-1:000000000000:jobs-dlq";

function event(id: string, receives: number, source = "arn:aws:sqs:us-east-1:000000000000:jobs"): SQSEvent {
  return {
    Records: [
      {
        messageId: `m-${id}`,
        receiptHandle: `r-${id}`,
        body: JSON.stringify({ id }),
        attributes: {
          ApproximateReceiveCount: String(receives),
          SentTimestamp: "0",
          SenderId: "test",
          ApproximateFirstReceiveTimestamp: "0",
        },
        messageAttributes: {},
        md5OfBody: "",
        eventSource: "aws:sqs",
        eventSourceARN: source,
        awsRegion: "us-east-1",
      },
    ],
  };
}

function runner(run: JobRunner["run"]): { runner: JobRunner; abandoned: [string, number][] } {
  const abandoned: [string, number][] = [];
  const fake = {
    run,
    abandon: async (id: string, receives: number) => {
      abandoned.push([id, receives]);
    },
  } as unknown as JobRunner;
  return { runner: fake, abandoned };
}

const logger = new Logger({ serviceName: "test", logLevel: "SILENT" });

describe("jobs worker handler", () => {
  it("backs off 30 s, then doubles, up to 15 minutes", () => {
    expect([1, 2, 3, 4, 5, 6, 9].map(retryDelaySeconds)).toEqual([30, 60, 120, 240, 480, 900, 900]);
  });

  it("reports a job that threw as a batch item failure and brings its message back after the backoff", async () => {
    const delays: [string, number][] = [];
    const { runner: failing } = runner(async () => {
      throw new Error("socket hang up");
    });
    const handler = createJobsHandler(failing, logger, {
      retryAfter: async (handle, seconds) => {
        delays.push([handle, seconds]);
      },
    });

    const response = await handler(event("a", 2));

    expect(response.batchItemFailures).toEqual([{ itemIdentifier: "m-a" }]);
    expect(delays).toEqual([["r-a", 60]]);
  });

  it("passes the receive count and a deadline to the runner, and deletes a handled message", async () => {
    const calls: [string, number][] = [];
    const { runner: ok } = runner(async (id, receives, latest) => {
      expect(latest).toBeGreaterThan(Date.now());
      calls.push([id, receives]);
      return "succeeded";
    });

    const response = await createJobsHandler(ok, logger)(event("b", 3));

    expect(response.batchItemFailures).toEqual([]);
    expect(calls).toEqual([["b", 3]]);
  });

  it("ends a dead-lettered job failed instead of running it", async () => {
    const { runner: never, abandoned } = runner(async () => {
      throw new Error("must not run");
    });

    const response = await createJobsHandler(never, logger, { deadLetterQueueArn: DEAD_LETTER_ARN })(
      event("c", 4, DEAD_LETTER_ARN),
    );

    expect(response.batchItemFailures).toEqual([]);
    expect(abandoned).toEqual([["c", 4]]);
  });

  it("drops a message that is not a job's without failing the batch", async () => {
    const { runner: never } = runner(async () => {
      throw new Error("must not run");
    });
    const bad = event("d", 1);
    bad.Records[0]!.body = "not json";

    const response = await createJobsHandler(never, logger)(bad);

    expect(response.batchItemFailures).toEqual([]);
  });
});
