import { RemovalPolicy } from "aws-cdk-lib";
import { AttributeType, BillingMode, Table, TableEncryption } from "aws-cdk-lib/aws-dynamodb";
import { Grant, type IGrantable } from "aws-cdk-lib/aws-iam";
import { Construct } from "constructs";
import { REGISTRY_KEYS } from "#aws/registry/table.ts";

export interface ModelRegistryTableProps {
  /**
   * Refuse `DeleteTable` until an operator turns this off.
   * @default true
   */
  readonly deletionProtection?: boolean;
  /**
   * What happens to the table when it leaves the stack.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

const READ_ACTIONS = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"];
const WRITE_ACTIONS = [
  "dynamodb:PutItem",
  "dynamodb:UpdateItem",
  "dynamodb:DeleteItem",
  "dynamodb:BatchWriteItem",
  "dynamodb:ConditionCheckItem",
];

/**
 * The model registry: one on-demand table with the key layout of `lambdas/aws/registry/table.ts`
 * (versions, aliases and model heads under one partition per model, sparse index `models`).
 */
export class ModelRegistryTable extends Construct {
  public readonly table: Table;

  constructor(scope: Construct, id: string, props: ModelRegistryTableProps = {}) {
    super(scope, id);
    this.table = new Table(this, "Table", {
      partitionKey: { name: REGISTRY_KEYS.partition, type: AttributeType.STRING },
      sortKey: { name: REGISTRY_KEYS.sort, type: AttributeType.STRING },
      billingMode: BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      encryption: TableEncryption.AWS_MANAGED,
      deletionProtection: props.deletionProtection ?? true,
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
    });
    this.table.addGlobalSecondaryIndex({
      indexName: REGISTRY_KEYS.modelsIndex,
      partitionKey: { name: REGISTRY_KEYS.modelsIndexPartition, type: AttributeType.STRING },
      sortKey: { name: REGISTRY_KEYS.modelsIndexSort, type: AttributeType.STRING },
    });
  }

  /** Read versions, aliases and the `models` index; no scans. */
  public grantReadRegistry(grantee: IGrantable): Grant {
    return Grant.addToPrincipal({ grantee, actions: READ_ACTIONS, resourceArns: this.resourceArns() });
  }

  /** Write versions, aliases and model heads (conditional writes included). */
  public grantWriteRegistry(grantee: IGrantable): Grant {
    return Grant.addToPrincipal({ grantee, actions: WRITE_ACTIONS, resourceArns: [this.table.tableArn] });
  }

  /** Both of the above: read, then write. */
  public grantReadWriteRegistry(grantee: IGrantable): Grant {
    return this.grantReadRegistry(grantee).combine(this.grantWriteRegistry(grantee));
  }

  /** The table and its one index by name: no `index/*` wildcard. */
  private resourceArns(): string[] {
    return [this.table.tableArn, `${this.table.tableArn}/index/${REGISTRY_KEYS.modelsIndex}`];
  }
}
