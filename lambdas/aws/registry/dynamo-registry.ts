import { ConditionalCheckFailedException, type DynamoDBClient } from "@aws-sdk/client-dynamodb";
import {
  DeleteCommand,
  DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  QueryCommand,
  UpdateCommand,
} from "@aws-sdk/lib-dynamodb";
import type { ModelVersion } from "#core/model.ts";
import type { AliasRecord, ModelRegistryWriter } from "#core/registry/registry.ts";
import {
  type RegistryItem,
  type RegistryPage,
  type RegistryQuery,
  RegistryReader,
  type RegistryTable,
  toAlias,
} from "./reader.ts";
import { aliasSortKey, MODEL_HEAD_INDEX_VALUE, MODEL_HEAD_SORT_KEY, versionSortKey } from "./table.ts";

const isConditionFailure = (error: unknown) => error instanceof ConditionalCheckFailedException;

/** For a follow-up write whose condition failing means there is nothing left to do. */
const ignoreConditionFailure = (error: unknown): void => {
  if (!isConditionFailure(error)) throw error;
};

/** The registry's reads through the SDK's DocumentClient, for the functions that also write. */
export class DocumentClientTable implements RegistryTable {
  readonly #documents: DynamoDBDocumentClient;
  readonly #table: string;

  constructor(documents: DynamoDBDocumentClient, tableName: string) {
    this.#documents = documents;
    this.#table = tableName;
  }

  async get(key: { readonly pk: string; readonly sk: string }, consistent: boolean) {
    const { Item } = await this.#documents.send(
      new GetCommand({ TableName: this.#table, Key: key, ConsistentRead: consistent }),
    );
    return Item;
  }

  async query(query: RegistryQuery): Promise<RegistryPage> {
    const { Items, LastEvaluatedKey } = await this.#documents.send(
      new QueryCommand({
        TableName: this.#table,
        IndexName: query.indexName,
        KeyConditionExpression: query.keyCondition,
        ExpressionAttributeValues: query.values,
        Limit: query.limit,
        ExclusiveStartKey: query.start as RegistryItem | undefined,
      }),
    );
    return { items: Items ?? [], ...(LastEvaluatedKey === undefined ? {} : { next: LastEvaluatedKey }) };
  }
}

/**
 * The model registry on DynamoDB; see registry-table.ts for the item layout. Every write that can
 * race is conditional, and none needs a transaction (the local emulator has none). Reads are the
 * RegistryReader's, shared with the inference function's SDK-free table.
 */
export class DynamoModelRegistry extends RegistryReader implements ModelRegistryWriter {
  readonly #documents: DynamoDBDocumentClient;
  readonly #table: string;

  constructor(client: DynamoDBClient, tableName: string) {
    const documents = DynamoDBDocumentClient.from(client, {
      marshallOptions: { removeUndefinedValues: true },
    });
    super(new DocumentClientTable(documents, tableName));
    this.#documents = documents;
    this.#table = tableName;
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
        .catch(ignoreConditionFailure); // moved again meanwhile: the newer move wins
    }
    return { alias, version, updatedAt: now, ...(previous === undefined ? {} : { previous }) };
  }

  deleteAlias(name: string, alias: string): Promise<boolean> {
    return this.#deleteItem({ pk: name, sk: aliasSortKey(alias) });
  }

  async deleteVersion(name: string, version: number): Promise<boolean> {
    if (!(await this.#deleteItem({ pk: name, sk: versionSortKey(version) }))) return false;
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
      .catch(ignoreConditionFailure);
    return true;
  }

  /** Deletes one item; whether there was one to delete. */
  async #deleteItem(key: { readonly pk: string; readonly sk: string }): Promise<boolean> {
    const { Attributes } = await this.#documents.send(
      new DeleteCommand({ TableName: this.#table, Key: key, ReturnValues: "ALL_OLD" }),
    );
    return Attributes !== undefined;
  }
}
