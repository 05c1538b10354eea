import { CfnOutput, Stack, type StackProps } from "aws-cdk-lib";
import type { Construct } from "constructs";
import { JobsTable } from "./jobs-table.ts";
import { ModelBucket, type ModelBucketProps } from "./model-bucket.ts";
import { ModelRegistryTable, type ModelRegistryTableProps } from "./model-registry-table.ts";
import { PublishQueues, type PublishQueuesProps } from "./publish-queues.ts";

export interface MaasStatefulStackProps extends StackProps {
  /** @default ModelBucket's defaults */
  readonly modelBucket?: ModelBucketProps;
  /** @default ModelRegistryTable's defaults */
  readonly registry?: ModelRegistryTableProps;
  /** @default PublishQueues' defaults */
  readonly queues?: Omit<PublishQueuesProps, "bucket">;
}

/**
 * What outlives a deployment of the service: the model bucket, the registry, the publish queues and
 * asynchronous inference's job records. Deployed once and rarely changed; the service stack references it.
 */
export class MaasStatefulStack extends Stack {
  public readonly models: ModelBucket;
  public readonly registry: ModelRegistryTable;
  public readonly queues: PublishQueues;
  public readonly jobs: JobsTable;

  constructor(scope: Construct, id: string, props: MaasStatefulStackProps = {}) {
    super(scope, id, props);
    this.models = new ModelBucket(this, "Models", props.modelBucket);
    this.registry = new ModelRegistryTable(this, "Registry", props.registry);
    this.queues = new PublishQueues(this, "Publish", { ...props.queues, bucket: this.models.bucket });
    this.jobs = new JobsTable(this, "Jobs");

    new CfnOutput(this, "ModelBucketName", {
      value: this.models.bucket.bucketName,
      description: "Upload models to s3://<this>/models/<name>/<version>/model.onnx",
    });
    new CfnOutput(this, "RegistryTableName", { value: this.registry.table.tableName });
    new CfnOutput(this, "JobsTableName", { value: this.jobs.table.tableName });
    new CfnOutput(this, "RegisterDeadLetterQueueUrl", {
      value: this.queues.registerDeadLetterQueue.queueUrl,
    });
  }
}
