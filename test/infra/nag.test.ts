import { type App, CfnResource, Stack, Validations } from "aws-cdk-lib";
import { Bucket } from "aws-cdk-lib/aws-s3";
import type { IConstruct } from "constructs";
import { describe, expect, it } from "vitest";
import { type AcknowledgedRule, acknowledgedRules, nagPacks } from "../../lib/nag.ts";
import { maasStacks, testApp } from "./support.ts";

const EVERY_OPTION = {
  provisionedConcurrency: 1,
  preloadModels: "iris",
  corsOrigins: "https://app.example.com",
  quotaLimit: 1000,
  alarmEmail: "ops@example.com",
  sagemaker: true,
  sagemakerMaxInstanceCount: 4,
};

function findings(app: App): string[] {
  // Construct validations (which add cross-stack acknowledgments) run during synthesis.
  app.synth();
  return nagPacks().flatMap((pack) =>
    pack
      .validateScope(app)
      .violations.flatMap((violation) =>
        violation.violatingResources.map((resource) => `${violation.ruleName} at ${resource.constructPath}`),
      ),
  );
}

function allAcknowledgments(root: IConstruct): { rule: AcknowledgedRule; onResource: boolean }[] {
  return root.node.findAll().flatMap((construct) =>
    acknowledgedRules(construct).map((rule) => ({
      rule,
      onResource: CfnResource.isCfnResource(construct),
    })),
  );
}

describe("cdk-nag (AwsSolutions and Serverless packs)", () => {
  it("finds nothing unacknowledged in the default deployment", () => {
    expect(findings(maasStacks().app)).toEqual([]);
  });

  it("finds nothing unacknowledged with every optional feature on (SageMaker on a GPU instance included)", () => {
    expect(findings(maasStacks({ context: EVERY_OPTION }).app)).toEqual([]);
  });

  it("finds nothing unacknowledged with a multi-model SageMaker endpoint on a CPU instance", () => {
    expect(
      findings(maasStacks({ context: { sagemaker: true, sagemakerInstanceType: "ml.m5.xlarge" } }).app),
    ).toEqual([]);
  });

  it("lets a synthesis with the packs registered as validation plugins through, as bin/app.ts does", () => {
    const { app } = maasStacks({ context: EVERY_OPTION });
    Validations.of(app).addPlugins(...nagPacks(app));
    expect(() => app.synth()).not.toThrow();
  });

  it("reports a finding nobody acknowledged (the packs do run)", () => {
    const app = testApp();
    new Bucket(new Stack(app, "Careless"), "Bucket");
    expect(findings(app)).toEqual(
      expect.arrayContaining([
        "AwsSolutions-S1 at Careless/Bucket/Resource",
        "AwsSolutions-S10 at Careless/Bucket/Resource",
      ]),
    );
  });

  it("acknowledges each finding on one resource, for one rule, with a reason", () => {
    const { app } = maasStacks({ context: EVERY_OPTION });
    app.synth();
    const acknowledgments = allAcknowledgments(app);
    expect(acknowledgments.length).toBeGreaterThan(0);
    for (const { rule, onResource } of acknowledgments) {
      expect(onResource, `${rule.id} on ${rule.path} is not on a CloudFormation resource`).toBe(true);
      expect(rule.id).toMatch(/^(AwsSolutions|Serverless)-[A-Za-z0-9]+(\[.+\])?$/);
      expect(rule.reason.length, `${rule.id} on ${rule.path}`).toBeGreaterThan(30);
    }
    const byResource = new Map<string, string[]>();
    for (const { rule } of acknowledgments)
      byResource.set(rule.path, [...(byResource.get(rule.path) ?? []), rule.id]);
    for (const [path, ids] of byResource) expect(new Set(ids).size, path).toBe(ids.length);
    console.log(
      `acknowledged findings (${acknowledgments.length}):\n${acknowledgments
        .map(({ rule }) => `  ${rule.path}  ${rule.id}\n      ${rule.reason}`)
        .join("\n")}`,
    );
  });
});
