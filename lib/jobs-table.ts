import { RemovalPolicy } from "aws-cdk-lib";
import { AttributeType, BillingMode, Table, TableEncryption } from "aws-cdk-lib/aws-dynamodb";
import { Grant, type IGrantable } from "aws-cdk-lib/aws-iam";
import { Construct } from "constructs";
import { JOBS_TABLE_KEYS } from "#aws/jobs/aws-jobs.ts";
import { acknowledge } from "./nag.ts";

/**
 * Asynchronous inference's job records: one on-demand table with the key layout of
 * `lambdas/aws/jobs/aws-jobs.ts` (one item per job under `id`), deleted by DynamoDB's time to live at
 * `expires_at`, when the job's objects expire from the model bucket too.
 */
export class JobsTable extends Construct {
  public readonly table: Table;

  constructor(scope: Construct, id: string) {
    super(scope, id);
    this.table = new Table(this, "Table", {
      partitionKey: { name: JOBS_TABLE_KEYS.partition, type: AttributeType.STRING },
      timeToLiveAttribute: JOBS_TABLE_KEYS.timeToLive,
      billingMode: BillingMode.PAY_PER_REQUEST,
      encryption: TableEncryption.AWS_MANAGED,
      // Ephemeral: every item expires within days and a lost job is submitted again, so the table may
      // go with the stack (no deletion protection, no retained copy).
      deletionProtection: false,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    acknowledge(
      this.table,
      "AwsSolutions-DDB3",
      "Job records live a few days (time to live) and a lost job is submitted again; their inputs and results expire from the bucket on the same schedule, so a backup would outlive what it refers to.",
    );
  }

  /** Submit jobs and read them back: create, mark one failed when it cannot be queued, get. */
  public grantSubmitJobs(grantee: IGrantable): Grant {
    return this.grant(grantee, ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]);
  }

  /** Run jobs: read one, move it through its statuses. */
  public grantRunJobs(grantee: IGrantable): Grant {
    return this.grant(grantee, ["dynamodb:GetItem", "dynamodb:UpdateItem"]);
  }

  private grant(grantee: IGrantable, actions: string[]): Grant {
    return Grant.addToPrincipal({ grantee, actions, resourceArns: [this.table.tableArn] });
  }
}
