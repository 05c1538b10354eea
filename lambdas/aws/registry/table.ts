import type { CreateTableCommandInput } from "@aws-sdk/client-dynamodb";

/**
 * The registry is one DynamoDB table, partitioned by model name:
 *   pk = <name>, sk = "v#<10-digit version>"  a version record (sorts newest-last)
 *   pk = <name>, sk = "a#<alias>"             an alias: { version }
 *   pk = <name>, sk = "m"                     the model's head: summary for listings
 * The sparse index "models" holds only head items (gsi1pk = "model", gsi1sk = <name>), so
 * listing models is one query, not a scan.
 */
export const REGISTRY_KEYS = {
  partition: "pk",
  sort: "sk",
  modelsIndex: "models",
  modelsIndexPartition: "gsi1pk",
  modelsIndexSort: "gsi1sk",
} as const;

export const VERSION_PREFIX = "v#";
export const ALIAS_PREFIX = "a#";

export function versionSortKey(version: number): string {
  return `${VERSION_PREFIX}${String(version).padStart(10, "0")}`;
}

export function aliasSortKey(alias: string): string {
  return `${ALIAS_PREFIX}${alias}`;
}

export const MODEL_HEAD_SORT_KEY = "m";
export const MODEL_HEAD_INDEX_VALUE = "model";

/** CreateTable input used by the local stack; the CDK stack declares the same keys. */
export function registryTableDefinition(tableName: string): CreateTableCommandInput {
  return {
    TableName: tableName,
    BillingMode: "PAY_PER_REQUEST",
    AttributeDefinitions: [
      { AttributeName: REGISTRY_KEYS.partition, AttributeType: "S" },
      { AttributeName: REGISTRY_KEYS.sort, AttributeType: "S" },
      { AttributeName: REGISTRY_KEYS.modelsIndexPartition, AttributeType: "S" },
      { AttributeName: REGISTRY_KEYS.modelsIndexSort, AttributeType: "S" },
    ],
    KeySchema: [
      { AttributeName: REGISTRY_KEYS.partition, KeyType: "HASH" },
      { AttributeName: REGISTRY_KEYS.sort, KeyType: "RANGE" },
    ],
    GlobalSecondaryIndexes: [
      {
        IndexName: REGISTRY_KEYS.modelsIndex,
        KeySchema: [
          { AttributeName: REGISTRY_KEYS.modelsIndexPartition, KeyType: "HASH" },
          { AttributeName: REGISTRY_KEYS.modelsIndexSort, KeyType: "RANGE" },
        ],
        Projection: { ProjectionType: "ALL" },
      },
    ],
  };
}
