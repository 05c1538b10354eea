import * as z from "zod/mini";
import type { AwsHttpClient } from "#aws/http/aws-http.ts";
import type { PageCursor, RegistryItem, RegistryPage, RegistryQuery, RegistryTable } from "./reader.ts";

/**
 * The registry's reads (GetItem, Query) in DynamoDB's JSON protocol over a signed request, for the
 * inference function: no SDK client to import on a cold start. Items come back exactly as the
 * DocumentClient gives them.
 */

const attributeMap = z.record(z.string(), z.unknown());
const getItemOutput = z.object({ Item: z.optional(attributeMap) });
const queryOutput = z.object({
  Items: z.optional(z.array(attributeMap)),
  LastEvaluatedKey: z.optional(attributeMap),
});

export class DynamoHttpTable implements RegistryTable {
  readonly #dynamo: AwsHttpClient;
  readonly #table: string;

  constructor(dynamo: AwsHttpClient, tableName: string) {
    if (dynamo.service !== "dynamodb")
      throw new Error(`DynamoHttpTable needs a dynamodb client, not ${dynamo.service}`);
    this.#dynamo = dynamo;
    this.#table = tableName;
  }

  async get(key: { readonly pk: string; readonly sk: string }, consistent: boolean) {
    const output = getItemOutput.parse(
      await this.#call("GetItem", {
        TableName: this.#table,
        Key: { pk: { S: key.pk }, sk: { S: key.sk } },
        ConsistentRead: consistent,
      }),
    );
    return output.Item === undefined ? undefined : unmarshallItem(output.Item);
  }

  async query(query: RegistryQuery): Promise<RegistryPage> {
    const output = queryOutput.parse(
      await this.#call("Query", {
        TableName: this.#table,
        ...(query.indexName === undefined ? {} : { IndexName: query.indexName }),
        KeyConditionExpression: query.keyCondition,
        ExpressionAttributeValues: Object.fromEntries(
          Object.entries(query.values).map(([name, value]) => [name, { S: value }]),
        ),
        ...(query.limit === undefined ? {} : { Limit: query.limit }),
        // This table's own cursor: the LastEvaluatedKey it returned, still in wire form.
        ...(query.start === undefined ? {} : { ExclusiveStartKey: query.start }),
      }),
    );
    const next: PageCursor | undefined = output.LastEvaluatedKey;
    return { items: (output.Items ?? []).map(unmarshallItem), ...(next === undefined ? {} : { next }) };
  }

  async #call(operation: "GetItem" | "Query", input: Record<string, unknown>): Promise<unknown> {
    const { body } = await this.#dynamo.json({
      operation,
      method: "POST",
      url: this.#dynamo.endpoint,
      headers: {
        "content-type": "application/x-amz-json-1.0",
        "x-amz-target": `DynamoDB_20120810.${operation}`,
      },
      body: JSON.stringify(input),
    });
    return body;
  }
}

function unmarshallItem(item: Readonly<Record<string, unknown>>): RegistryItem {
  const result: RegistryItem = {};
  for (const [name, value] of Object.entries(item)) result[name] = unmarshall(value);
  return result;
}

/**
 * One attribute value as the DocumentClient's unmarshall gives it: N as a number (a BigInt beyond
 * the safe integers), NS/SS/BS as a Set, B as a Uint8Array, NULL as null.
 */
export function unmarshall(attribute: unknown): unknown {
  const [type, value] =
    typeof attribute === "object" && attribute !== null ? (Object.entries(attribute)[0] ?? []) : [];
  switch (type) {
    case "S":
      return text(value);
    case "N":
      return toNumber(text(value));
    case "BOOL":
      return value === true;
    case "NULL":
      return null;
    case "B":
      return toBytes(text(value));
    case "M":
      if (typeof value !== "object" || value === null || Array.isArray(value)) break;
      return unmarshallItem(value as Record<string, unknown>);
    case "L":
      return list(value).map(unmarshall);
    case "SS":
      return new Set(list(value).map(text));
    case "NS":
      return new Set(list(value).map((item) => toNumber(text(item))));
    case "BS":
      return new Set(list(value).map((item) => toBytes(text(item))));
  }
  throw new Error(`DynamoDB sent an attribute value this reader cannot decode: ${JSON.stringify(attribute)}`);
}

function text(value: unknown): string {
  if (typeof value !== "string")
    throw new Error(`DynamoDB sent ${JSON.stringify(value)} where a string belongs`);
  return value;
}

function list(value: unknown): unknown[] {
  if (!Array.isArray(value)) throw new Error(`DynamoDB sent ${JSON.stringify(value)} where a list belongs`);
  return value;
}

/** Past 2^53 a number loses digits: the DocumentClient returns a BigInt there, and so do we. */
function toNumber(digits: string): number | bigint {
  const number = Number(digits);
  if (Number.isFinite(number) && Math.abs(number) > Number.MAX_SAFE_INTEGER) {
    try {
      return BigInt(digits);
    } catch {
      throw new Error(`DynamoDB number ${digits} has no exact JavaScript value`);
    }
  }
  return number;
}

function toBytes(base64: string): Uint8Array {
  return Uint8Array.from(Buffer.from(base64, "base64"));
}
