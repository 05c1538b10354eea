import { ConditionalCheckFailedException, type DynamoDBClient } from "@aws-sdk/client-dynamodb";
import {
  DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  paginateQuery,
  UpdateCommand,
} from "@aws-sdk/lib-dynamodb";
import type { ModelVersion } from "#core/model.ts";
import { type ModelRegistry, type ModelSummary, modelVersionSchema } from "#core/registry.ts";
import {
  aliasSortKey,
  MODEL_HEAD_INDEX_VALUE,
  MODEL_HEAD_SORT_KEY,
  REGISTRY_KEYS,
  versionSortKey,
} from "./registry-table.ts";

export class VersionExistsError extends Error {
  constructor(name: string, version: number) {
    super(`model '${name}' version ${version} already exists`);
    this.name = "VersionExistsError";
  }
}

/** The model registry on DynamoDB; see registry-table.ts for the item layout. */
export class DynamoModelRegistry implements ModelRegistry {
  readonly #documents: DynamoDBDocumentClient;
  readonly #table: string;

  constructor(client: DynamoDBClient, tableName: string) {
    this.#documents = DynamoDBDocumentClient.from(client, {
      marshallOptions: { removeUndefinedValues: true },
    });
    this.#table = tableName;
  }

  async getVersion(name: string, version: number): Promise<ModelVersion | undefined> {
    const { Item } = await this.#documents.send(
      new GetCommand({ TableName: this.#table, Key: { pk: name, sk: versionSortKey(version) } }),
    );
    return Item === undefined ? undefined : toVersion(Item);
  }

  async getAlias(name: string, alias: string): Promise<number | undefined> {
    const { Item } = await this.#documents.send(
      new GetCommand({ TableName: this.#table, Key: { pk: name, sk: aliasSortKey(alias) } }),
    );
    return typeof Item?.version === "number" ? Item.version : undefined;
  }

  async listVersions(name: string): Promise<ModelVersion[]> {
    const versions: ModelVersion[] = [];
    const pages = paginateQuery(
      { client: this.#documents },
      {
        TableName: this.#table,
        KeyConditionExpression: "pk = :name AND begins_with(sk, :prefix)",
        ExpressionAttributeValues: { ":name": name, ":prefix": "v#" },
      },
    );
    for await (const page of pages) for (const item of page.Items ?? []) versions.push(toVersion(item));
    return versions;
  }

  async listModels(): Promise<ModelSummary[]> {
    const models: ModelSummary[] = [];
    const pages = paginateQuery(
      { client: this.#documents },
      {
        TableName: this.#table,
        IndexName: REGISTRY_KEYS.modelsIndex,
        KeyConditionExpression: "gsi1pk = :head",
        ExpressionAttributeValues: { ":head": MODEL_HEAD_INDEX_VALUE },
      },
    );
    for await (const page of pages) {
      for (const item of page.Items ?? []) {
        const versions = item.versions instanceof Set ? [...(item.versions as Set<number>)] : [];
        models.push({ name: String(item.pk), versions: versions.map(Number).sort((a, b) => a - b) });
      }
    }
    return models;
  }

  /**
   * Writes a new version (only if absent) and records it on the model's head. Two single-item writes,
   * not a transaction (dynalite has none): the head update is idempotent and also runs when the
   * version already exists, so a retry after a crash between the two completes the pair.
   * Throws VersionExistsError when the version was already there.
   */
  async createVersion(record: ModelVersion): Promise<void> {
    let exists = false;
    try {
      await this.#documents.send(
        new PutCommand({
          TableName: this.#table,
          Item: { pk: record.name, sk: versionSortKey(record.version), ...record },
          ConditionExpression: "attribute_not_exists(pk)",
        }),
      );
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
      exists = true;
    }
    await this.#documents.send(
      new UpdateCommand({
        TableName: this.#table,
        Key: { pk: record.name, sk: MODEL_HEAD_SORT_KEY },
        UpdateExpression: "SET gsi1pk = :head, gsi1sk = :name, updatedAt = :now ADD versions :version",
        ExpressionAttributeValues: {
          ":head": MODEL_HEAD_INDEX_VALUE,
          ":name": record.name,
          ":now": record.updatedAt,
          ":version": new Set([record.version]),
        },
      }),
    );
    if (exists) throw new VersionExistsError(record.name, record.version);
  }

  async setAlias(
    name: string,
    alias: string,
    version: number,
    now = new Date().toISOString(),
  ): Promise<void> {
    await this.#documents.send(
      new PutCommand({
        TableName: this.#table,
        Item: { pk: name, sk: aliasSortKey(alias), alias, version, updatedAt: now },
      }),
    );
  }
}

function toVersion(item: Record<string, unknown>): ModelVersion {
  const { pk: _pk, sk: _sk, ...record } = item;
  return modelVersionSchema.parse(record);
}
