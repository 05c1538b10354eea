import type { CfnResource } from "aws-cdk-lib";
import { Template } from "aws-cdk-lib/assertions";
import { describe, expect, it } from "vitest";
import { maasStacks } from "./support.ts";
import { render, type TemplateResource } from "./template-helpers.ts";

const { service, stateful } = maasStacks();
const template = Template.fromStack(service);
const statefulTemplate = Template.fromStack(stateful);

const functionId = service.getLogicalId(service.optimize.node.defaultChild as CfnResource);
const queueId = stateful.getLogicalId(
  stateful.queues.optimizeDeadLetterQueue.node.defaultChild as CfnResource,
);
const optimizeProps = () =>
  (template.findResources("AWS::Lambda::Function") as Record<string, TemplateResource>)[functionId]
    ?.Properties;

describe("the optimize dead-letter queue", () => {
  it("is drained by the optimize function in batches, reporting failed items", () => {
    const mappings = (
      Object.values(template.findResources("AWS::Lambda::EventSourceMapping")) as TemplateResource[]
    ).filter((mapping) => render(mapping.Properties.FunctionName) === `<${functionId}>`);
    const deadLetters = mappings.find((mapping) =>
      /OptimizeDeadLetterQueue.*Arn/.test(render(mapping.Properties.EventSourceArn)),
    );

    expect(mappings).toHaveLength(2);
    expect(deadLetters?.Properties).toMatchObject({
      BatchSize: 10,
      FunctionResponseTypes: ["ReportBatchItemFailures"],
      ScalingConfig: { MaximumConcurrency: 2 },
    });
  });

  it("tells the function which queue is the dead-letter one and how many receives a message gets", () => {
    const environment = optimizeProps()?.Environment as { Variables: Record<string, unknown> } | undefined;
    const variables = environment?.Variables ?? {};

    expect(render(variables.MAAS_OPTIMIZE_DEAD_LETTER_QUEUE_ARN)).toMatch(/OptimizeDeadLetterQueue.*Arn/);
    expect(variables.MAAS_OPTIMIZE_MAX_RECEIVES).toBe(String(stateful.queues.maxReceiveCount));
    const redrive = statefulTemplate.findResources("AWS::SQS::Queue")[
      stateful.getLogicalId(stateful.queues.optimizeQueue.node.defaultChild as CfnResource)
    ]?.Properties.RedrivePolicy as { maxReceiveCount: number };
    expect(redrive.maxReceiveCount).toBe(stateful.queues.maxReceiveCount);
  });

  it("hides a received dead letter for at least the function's timeout, as Lambda requires of a consumed queue", () => {
    const queue = statefulTemplate.findResources("AWS::SQS::Queue")[queueId];

    expect(queue?.Properties.VisibilityTimeout).toBeGreaterThanOrEqual(optimizeProps()?.Timeout as number);
  });
});
