import { App, Duration, Stack } from "aws-cdk-lib";
import { Match, Template } from "aws-cdk-lib/assertions";
import { Bucket } from "aws-cdk-lib/aws-s3";
import { describe, expect, it } from "vitest";
import { JOBS_TABLE_KEYS, jobsTableDefinition } from "#aws/jobs/aws-jobs.ts";
import { registryTableDefinition } from "#aws/registry/table.ts";
import { JOB_KEYS } from "#core/jobs/jobs.ts";
import { ModelBucket } from "../../lib/model-bucket.ts";
import { PublishQueues } from "../../lib/publish-queues.ts";
import { MaasStatefulStack } from "../../lib/stateful-stack.ts";
import { maasStacks } from "./support.ts";
import { cdkPath, type TemplateResource } from "./template-helpers.ts";

const { stateful } = maasStacks();
const template = Template.fromStack(stateful);

function logicalId(construct: { node: { defaultChild?: unknown } }): string {
  return stateful.getLogicalId(construct.node.defaultChild as Parameters<Stack["getLogicalId"]>[0]);
}

describe("model bucket", () => {
  const bucketId = logicalId(stateful.models.bucket);

  it("is versioned, SSE-S3 encrypted, owner-enforced and closed to the public", () => {
    template.hasResourceProperties("AWS::S3::Bucket", {
      VersioningConfiguration: { Status: "Enabled" },
      BucketEncryption: {
        ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: "AES256" } }],
      },
      OwnershipControls: { Rules: [{ ObjectOwnership: "BucketOwnerEnforced" }] },
      PublicAccessBlockConfiguration: {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      },
    });
  });

  const lifecycleRules = (from = template, id = bucketId) =>
    from.findResources("AWS::S3::Bucket")[id]?.Properties.LifecycleConfiguration.Rules as Record<
      string,
      unknown
    >[];

  it("aborts unfinished multipart uploads and expires replaced versions", () => {
    expect(lifecycleRules().filter((rule) => rule.Prefix === undefined)).toEqual([
      { AbortIncompleteMultipartUpload: { DaysAfterInitiation: 7 }, Status: "Enabled" },
      { NoncurrentVersionExpiration: { NoncurrentDays: 30 }, Status: "Enabled" },
    ]);
  });

  it("expires asynchronous inference's objects after the retention days, their old versions and unfinished uploads after a day", () => {
    expect(JOB_KEYS.inputPrefix.startsWith(JOB_KEYS.prefix)).toBe(true);
    expect(JOB_KEYS.resultPrefix.startsWith(JOB_KEYS.prefix)).toBe(true);
    expect(lifecycleRules().filter((rule) => rule.Prefix === "async/")).toEqual([
      {
        Prefix: "async/",
        ExpirationInDays: 7,
        NoncurrentVersionExpiration: { NoncurrentDays: 1 },
        AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 },
        Status: "Enabled",
      },
      { Prefix: "async/", ExpiredObjectDeleteMarker: true, Status: "Enabled" },
    ]);
  });

  it("expires captured payloads after 30 days unless context says otherwise, their old versions after a day", () => {
    expect(lifecycleRules().filter((rule) => rule.Prefix === "capture/")).toEqual([
      {
        Prefix: "capture/",
        ExpirationInDays: 30,
        NoncurrentVersionExpiration: { NoncurrentDays: 1 },
        Status: "Enabled",
      },
      { Prefix: "capture/", ExpiredObjectDeleteMarker: true, Status: "Enabled" },
    ]);
    const { stateful: custom } = maasStacks({ context: { captureRetentionDays: "90" } });
    const rules = lifecycleRules(
      Template.fromStack(custom),
      custom.getLogicalId(custom.models.bucket.node.defaultChild as Parameters<Stack["getLogicalId"]>[0]),
    );
    expect(rules.find((rule) => rule.Prefix === "capture/" && "ExpirationInDays" in rule)).toMatchObject({
      ExpirationInDays: 90,
    });
    expect(() => maasStacks({ context: { captureRetentionDays: "0" } })).toThrow(
      "captureRetentionDays must be a whole number of days, at least 1, got 0",
    );
  });

  it("keeps job objects as many days as context says, the number the inference function is told", () => {
    const { stateful: custom, service } = maasStacks({ context: { asyncRetentionDays: "2" } });
    const rules = lifecycleRules(
      Template.fromStack(custom),
      custom.getLogicalId(custom.models.bucket.node.defaultChild as Parameters<Stack["getLogicalId"]>[0]),
    );
    expect(rules.find((rule) => rule.Prefix === "async/" && "ExpirationInDays" in rule)).toMatchObject({
      ExpirationInDays: 2,
    });
    expect(custom.models.jobRetentionDays).toBe(2);
    const inference =
      Template.fromStack(service).findResources("AWS::Lambda::Function")[
        service.getLogicalId(service.inference.node.defaultChild as Parameters<Stack["getLogicalId"]>[0])
      ];
    expect(inference?.Properties.Environment.Variables.MAAS_ASYNC_RETENTION_DAYS).toBe("2");
    expect(stateful.models.jobRetentionDays).toBe(7);
  });

  it("is kept when the stack goes away", () => {
    template.hasResource("AWS::S3::Bucket", {
      Properties: Match.objectLike({ VersioningConfiguration: { Status: "Enabled" } }),
      DeletionPolicy: "Retain",
      UpdateReplacePolicy: "Retain",
    });
  });

  it("denies requests without TLS", () => {
    template.hasResourceProperties("AWS::S3::BucketPolicy", {
      Bucket: { Ref: bucketId },
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: "Deny",
            Action: "s3:*",
            Principal: { AWS: "*" },
            Condition: { Bool: { "aws:SecureTransport": "false" } },
          }),
        ]),
      },
    });
  });

  it("writes server access logs to a separate, expiring, TLS-only bucket", () => {
    const logsId = logicalId(stateful.models.accessLogsBucket!);
    const bucket = template.findResources("AWS::S3::Bucket")[bucketId];
    expect(bucket?.Properties.LoggingConfiguration).toEqual({
      DestinationBucketName: { Ref: logsId },
      LogFilePrefix: "model-bucket/",
    });
    const logs = template.findResources("AWS::S3::Bucket")[logsId];
    expect(logs?.Properties.LifecycleConfiguration.Rules).toEqual([
      { ExpirationInDays: 90, Status: "Enabled" },
    ]);
    template.hasResourceProperties("AWS::S3::BucketPolicy", {
      Bucket: { Ref: logsId },
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Effect: "Deny", Condition: { Bool: { "aws:SecureTransport": "false" } } }),
          Match.objectLike({ Principal: { Service: "logging.s3.amazonaws.com" }, Action: "s3:PutObject" }),
        ]),
      },
    });
  });
});

describe("registry table", () => {
  const definition = registryTableDefinition("unused");

  it("declares the keys and the models index of lambdas/aws/registry/table.ts", () => {
    template.hasResourceProperties("AWS::DynamoDB::Table", {
      KeySchema: definition.KeySchema,
      AttributeDefinitions: Match.arrayEquals(
        (definition.AttributeDefinitions ?? []).map((attribute) => Match.objectEquals({ ...attribute })),
      ),
      GlobalSecondaryIndexes: definition.GlobalSecondaryIndexes?.map((index) => ({
        IndexName: index.IndexName,
        KeySchema: index.KeySchema,
        Projection: index.Projection,
      })),
    });
  });

  it("bills per request, keeps point-in-time recovery, encrypts with the AWS managed key", () => {
    template.hasResourceProperties("AWS::DynamoDB::Table", {
      BillingMode: "PAY_PER_REQUEST",
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      // SSEEnabled without a key: KMS with the AWS managed key aws/dynamodb.
      SSESpecification: Match.objectEquals({ SSEEnabled: true }),
      DeletionProtectionEnabled: true,
    });
    template.hasResource("AWS::DynamoDB::Table", { DeletionPolicy: "Retain" });
  });
});

describe("jobs table", () => {
  const definition = jobsTableDefinition("unused");
  const jobsTable = () =>
    template.findResources("AWS::DynamoDB::Table")[logicalId(stateful.jobs.table)] as TemplateResource;

  it("declares the key of lambdas/aws/jobs/aws-jobs.ts and deletes each job at its expires_at", () => {
    expect(jobsTable().Properties).toMatchObject({
      KeySchema: definition.KeySchema,
      AttributeDefinitions: definition.AttributeDefinitions,
      TimeToLiveSpecification: { AttributeName: JOBS_TABLE_KEYS.timeToLive, Enabled: true },
    });
    expect(JOBS_TABLE_KEYS.timeToLive).toBe("expires_at");
    expect(jobsTable().Properties.GlobalSecondaryIndexes).toBeUndefined();
  });

  it("bills per request and encrypts with the AWS managed key", () => {
    expect(jobsTable().Properties).toMatchObject({
      BillingMode: "PAY_PER_REQUEST",
      SSESpecification: { SSEEnabled: true },
    });
    expect(jobsTable().Properties.SSESpecification).toEqual({ SSEEnabled: true });
  });

  it("goes with the stack: its records live days at most and a lost job is submitted again", () => {
    expect(jobsTable()).toMatchObject({ DeletionPolicy: "Delete", UpdateReplacePolicy: "Delete" });
    expect(jobsTable().Properties.DeletionProtectionEnabled).toBe(false);
    expect(cdkPath(jobsTable())).toBe("MaasStateful/Jobs/Table/Resource");
  });

  it("outputs its name", () => {
    template.hasOutput("JobsTableName", { Value: { Ref: logicalId(stateful.jobs.table) } });
  });
});

describe("publish queues", () => {
  const queues = stateful.queues;
  const arnOf = (queue: typeof queues.registerQueue) => ({ "Fn::GetAtt": [logicalId(queue), "Arn"] });

  it("makes two work queues and two dead-letter queues, all SSE and TLS only", () => {
    template.resourceCountIs("AWS::SQS::Queue", 4);
    template.allResourcesProperties("AWS::SQS::Queue", { SqsManagedSseEnabled: true });
    template.resourceCountIs("AWS::SQS::QueuePolicy", 4);
    for (const queue of [
      queues.registerQueue,
      queues.registerDeadLetterQueue,
      queues.optimizeQueue,
      queues.optimizeDeadLetterQueue,
    ]) {
      template.hasResourceProperties("AWS::SQS::QueuePolicy", {
        Queues: [{ Ref: logicalId(queue) }],
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({ Effect: "Deny", Condition: { Bool: { "aws:SecureTransport": "false" } } }),
          ]),
        },
      });
    }
  });

  it("dead-letters register and optimize messages after three receives", () => {
    const resources = template.findResources("AWS::SQS::Queue");
    expect(resources[logicalId(queues.registerQueue)]?.Properties.RedrivePolicy).toEqual({
      deadLetterTargetArn: arnOf(queues.registerDeadLetterQueue),
      maxReceiveCount: 3,
    });
    expect(resources[logicalId(queues.optimizeQueue)]?.Properties.RedrivePolicy).toEqual({
      deadLetterTargetArn: arnOf(queues.optimizeDeadLetterQueue),
      maxReceiveCount: 3,
    });
  });

  it("hides a message for six 15-minute function timeouts and keeps dead letters 14 days", () => {
    const resources = template.findResources("AWS::SQS::Queue");
    expect(resources[logicalId(queues.registerQueue)]?.Properties.VisibilityTimeout).toBe(5400);
    expect(resources[logicalId(queues.registerDeadLetterQueue)]?.Properties.MessageRetentionPeriod).toBe(
      14 * 24 * 3600,
    );
  });

  it("announces model.onnx and maas.json uploads under models/ on the register queue", () => {
    template.hasResourceProperties("Custom::S3BucketNotifications", {
      BucketName: { Ref: logicalId(stateful.models.bucket) },
      NotificationConfiguration: {
        QueueConfigurations: ["model.onnx", "maas.json"].map((suffix) => ({
          Events: ["s3:ObjectCreated:*"],
          QueueArn: arnOf(queues.registerQueue),
          Filter: {
            Key: {
              FilterRules: [
                { Name: "suffix", Value: suffix },
                { Name: "prefix", Value: "models/" },
              ],
            },
          },
        })),
      },
    });
  });

  it("lets only the model bucket send to the register queue", () => {
    template.hasResourceProperties("AWS::SQS::QueuePolicy", {
      Queues: [{ Ref: logicalId(queues.registerQueue) }],
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: "Allow",
            Principal: { Service: "s3.amazonaws.com" },
            Condition: {
              ArnLike: { "aws:SourceArn": { "Fn::GetAtt": [logicalId(stateful.models.bucket), "Arn"] } },
            },
          }),
        ]),
      },
    });
  });

  it("scopes the notifications handler's S3 permission to the model bucket", () => {
    const policies = Object.values(template.findResources("AWS::IAM::Policy"));
    const statements = policies.flatMap((policy) => policy.Properties.PolicyDocument.Statement);
    expect(statements).toContainEqual(
      expect.objectContaining({
        Action: "s3:PutBucketNotification",
        Resource: { "Fn::GetAtt": [logicalId(stateful.models.bucket), "Arn"] },
      }),
    );
  });
});

describe("stateful constructs reject invalid settings", () => {
  const stack = () => new Stack(new App(), "Test");

  it("rejects a noncurrent-version expiry that is not whole days", () => {
    expect(
      () => new ModelBucket(stack(), "Models", { noncurrentVersionExpiration: Duration.hours(12) }),
    ).toThrow("noncurrentVersionExpiration must be a whole number of days, at least 1");
  });

  it("rejects a job retention that is not a whole number of days", () => {
    expect(() => new ModelBucket(stack(), "Models", { jobRetentionDays: 0.5 })).toThrow(
      "jobRetentionDays must be a whole number of days, at least 1, got 0.5",
    );
  });

  it("rejects an access log expiry when access logs are off", () => {
    expect(
      () =>
        new ModelBucket(stack(), "Models", {
          serverAccessLogs: false,
          accessLogsExpiration: Duration.days(10),
        }),
    ).toThrow("accessLogsExpiration needs serverAccessLogs");
  });

  it("rejects a visibility timeout beyond SQS's 12 hours", () => {
    const scope = stack();
    expect(
      () =>
        new PublishQueues(scope, "Queues", {
          bucket: new Bucket(scope, "Bucket"),
          visibilityTimeout: Duration.hours(13),
        }),
    ).toThrow("visibilityTimeout must be from 1 second to 12 hours, got 46800 s");
  });

  it("rejects a receive count of zero", () => {
    const scope = stack();
    expect(
      () => new PublishQueues(scope, "Queues", { bucket: new Bucket(scope, "Bucket"), maxReceiveCount: 0 }),
    ).toThrow("maxReceiveCount must be an integer from 1 to 1000, got 0");
  });

  it("builds without access logs when told so", () => {
    const withoutLogs = new MaasStatefulStack(new App(), "NoLogs", {
      modelBucket: { serverAccessLogs: false },
    });
    expect(withoutLogs.models.accessLogsBucket).toBeUndefined();
    Template.fromStack(withoutLogs).resourceCountIs("AWS::S3::Bucket", 1);
  });
});
