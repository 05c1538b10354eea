import { ConditionalCheckFailedException, type DynamoDBClient } from "@aws-sdk/client-dynamodb";
import {
  DeleteCommand,
  DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  paginateQuery,
  UpdateCommand,
} from "@aws-sdk/lib-dynamodb";
import type { ModelVersion } from "#core/model.ts";
import {
  type AliasRecord,
  type ModelRegistryWriter,
  type ModelSummary,
  modelVersionSchema,
} from "#core/registry.ts";
import {
  aliasSortKey,
  MODEL_HEAD_INDEX_VALUE,
  MODEL_HEAD_SORT_KEY,
  REGISTRY_KEYS,
  versionSortKey,
} from "./registry-table.ts";

const isConditionFailure = (error: unknown) => error instanceof ConditionalCheckFailedException;

/**
 * The model registry on DynamoDB; see registry-table.ts for the item layout. Every write that can
 * race is conditional, and none needs a transaction (the local emulator has none).
 */
export class DynamoModelRegistry implements ModelRegistryWriter {
  readonly #documents: DynamoDBDocumentClient;
  readonly #table: string;

  constructor(client: DynamoDBClient, tableName: string) {
    this.#documents = DynamoDBDocumentClient.from(client, {
      marshallOptions: { removeUndefinedValues: true },
    });
    this.#table = tableName;
  }

  getVersion(name: string, version: number): Promise<ModelVersion | undefined> {
    return this.#readVersion(name, version, false);
  }

  getVersionConsistent(name: string, version: number): Promise<ModelVersion | undefined> {
    return this.#readVersion(name, version, true);
  }

  async #readVersion(name: string, version: number, consistent: boolean) {
    const { Item } = await this.#documents.send(
      new GetCommand({
        TableName: this.#table,
        Key: { pk: name, sk: versionSortKey(version) },
        ConsistentRead: consistent,
      }),
    );
    return Item === undefined ? undefined : toVersion(Item);
  }

  async getAlias(name: string, alias: string): Promise<number | undefined> {
    return (await this.getAliasRecord(name, alias))?.version;
  }

  async getAliasRecord(name: string, alias: string): Promise<AliasRecord | undefined> {
    const { Item } = await this.#documents.send(
      new GetCommand({ TableName: this.#table, Key: { pk: name, sk: aliasSortKey(alias) } }),
    );
    return Item === undefined ? undefined : toAlias(Item);
  }

  async listVersions(name: string): Promise<ModelVersion[]> {
    const items = await this.#queryPrefix(name, "v#");
    return items.map(toVersion);
  }

  async listAliases(name: string): Promise<AliasRecord[]> {
    const items = await this.#queryPrefix(name, "a#");
    return items.map(toAlias);
  }

  async #queryPrefix(name: string, prefix: string): Promise<Record<string, unknown>[]> {
    const items: Record<string, unknown>[] = [];
    const pages = paginateQuery(
      { client: this.#documents },
      {
        TableName: this.#table,
        KeyConditionExpression: "pk = :name AND begins_with(sk, :prefix)",
        ExpressionAttributeValues: { ":name": name, ":prefix": prefix },
      },
    );
    for await (const page of pages) items.push(...(page.Items ?? []));
    return items;
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
        if (versions.length === 0) continue; // every version deleted: the model is gone
        models.push({ name: String(item.pk), versions: versions.map(Number).sort((a, b) => a - b) });
      }
    }
    return models;
  }

  /**
   * Writes a new version (only if absent) and records it on the model's head. Two single-item writes:
   * the head update is idempotent and also runs when the version already exists, so a retry after a
   * crash between the two completes the pair.
   */
  async createVersion(record: ModelVersion): Promise<ModelVersion | undefined> {
    let existing: ModelVersion | undefined;
    try {
      await this.#documents.send(
        new PutCommand({
          TableName: this.#table,
          Item: { pk: record.name, sk: versionSortKey(record.version), ...record },
          ConditionExpression: "attribute_not_exists(pk)",
        }),
      );
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
      existing = await this.getVersionConsistent(record.name, record.version);
      // Deleted between the failed put and this read: a retry will create it.
      if (existing === undefined) throw error;
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
    return existing;
  }

  async updateVersion(
    name: string,
    version: number,
    expected: ModelVersion["status"],
    changes: Partial<Omit<ModelVersion, "name" | "version">>,
  ): Promise<boolean> {
    const entries = Object.entries(changes).filter(([, value]) => value !== undefined);
    if (entries.length === 0) return true;
    const names: Record<string, string> = { "#status": "status" };
    const values: Record<string, unknown> = { ":expected": expected };
    const sets = entries.map(([key, value], index) => {
      names[`#f${index}`] = key;
      values[`:v${index}`] = value;
      return `#f${index} = :v${index}`;
    });
    try {
      await this.#documents.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: name, sk: versionSortKey(version) },
          UpdateExpression: `SET ${sets.join(", ")}`,
          ConditionExpression: "attribute_exists(pk) AND #status = :expected",
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: values,
        }),
      );
      return true;
    } catch (error) {
      if (isConditionFailure(error)) return false;
      throw error;
    }
  }

  async setAlias(
    name: string,
    alias: string,
    version: number,
    now = new Date().toISOString(),
  ): Promise<AliasRecord> {
    const { Attributes } = await this.#documents.send(
      new PutCommand({
        TableName: this.#table,
        Item: { pk: name, sk: aliasSortKey(alias), alias, version, updatedAt: now },
        ReturnValues: "ALL_OLD",
      }),
    );
    const old = Attributes === undefined ? undefined : toAlias(Attributes);
    // Setting the alias to where it already points keeps the earlier rollback target.
    const previous = old === undefined ? undefined : old.version === version ? old.previous : old.version;
    if (previous !== undefined) {
      await this.#documents
        .send(
          new UpdateCommand({
            TableName: this.#table,
            Key: { pk: name, sk: aliasSortKey(alias) },
            UpdateExpression: "SET previous = :previous",
            ConditionExpression: "version = :version",
            ExpressionAttributeValues: { ":previous": previous, ":version": version },
          }),
        )
        .catch((error: unknown) => {
          if (!isConditionFailure(error)) throw error; // moved again meanwhile: the newer move wins
        });
    }
    return { alias, version, updatedAt: now, ...(previous === undefined ? {} : { previous }) };
  }

  async deleteAlias(name: string, alias: string): Promise<boolean> {
    const { Attributes } = await this.#documents.send(
      new DeleteCommand({
        TableName: this.#table,
        Key: { pk: name, sk: aliasSortKey(alias) },
        ReturnValues: "ALL_OLD",
      }),
    );
    return Attributes !== undefined;
  }

  async deleteVersion(name: string, version: number): Promise<boolean> {
    const { Attributes } = await this.#documents.send(
      new DeleteCommand({
        TableName: this.#table,
        Key: { pk: name, sk: versionSortKey(version) },
        ReturnValues: "ALL_OLD",
      }),
    );
    if (Attributes === undefined) return false;
    await this.#documents
      .send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: name, sk: MODEL_HEAD_SORT_KEY },
          UpdateExpression: "DELETE versions :version",
          ConditionExpression: "attribute_exists(pk)",
          ExpressionAttributeValues: { ":version": new Set([version]) },
        }),
      )
      .catch((error: unknown) => {
        if (!isConditionFailure(error)) throw error;
      });
    return true;
  }
}

function toVersion(item: Record<string, unknown>): ModelVersion {
  const { pk: _pk, sk: _sk, ...record } = item;
  return modelVersionSchema.parse(record);
}

function toAlias(item: Record<string, unknown>): AliasRecord {
  return {
    alias: String(item.alias),
    version: Number(item.version),
    updatedAt: String(item.updatedAt ?? ""),
    ...(typeof item.previous === "number" ? { previous: item.previous } : {}),
  };
}
