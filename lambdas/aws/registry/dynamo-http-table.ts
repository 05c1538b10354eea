import type { AttributeValue } from "@aws-sdk/client-dynamodb";
import { unmarshall as toNative } from "@aws-sdk/util-dynamodb";
import * as z from "zod/mini";
import type { AwsHttpClient } from "#aws/http/aws-http.ts";
import type { PageCursor, RegistryItem, RegistryPage, RegistryQuery, RegistryTable } from "./reader.ts";

/**
 * The registry's reads (GetItem, Query) in DynamoDB's JSON protocol over a signed request, for the
 * inference function: no SDK client to import on a cold start. Items come back exactly as the
 * DocumentClient gives them: the wire is validated and its base64 decoded here, as the SDK's
 * deserializer does, then util-dynamodb unmarshalls as the DocumentClient does.
 */

const STRING = {
  error: (issue: { input: unknown }) => `DynamoDB sent ${JSON.stringify(issue.input)} where a string belongs`,
};
const bytes = z.pipe(
  z.string(STRING),
  z.transform((base64) => Uint8Array.from(Buffer.from(base64, "base64"))),
);
/** One attribute value as it comes on the wire: `{"N": "42"}`, `{"B": "<base64>"}`... */
const attributeValue = z.strictObject({
  S: z.optional(z.string(STRING)),
  N: z.optional(z.string(STRING)),
  BOOL: z.optional(z.boolean()),
  NULL: z.optional(z.boolean()),
  B: z.optional(bytes),
  get M() {
    return z.optional(z.record(z.string(), attributeValue));
  },
  get L() {
    return z.optional(z.array(attributeValue));
  },
  SS: z.optional(z.array(z.string(STRING))),
  NS: z.optional(z.array(z.string(STRING))),
  BS: z.optional(z.array(bytes)),
});
const item = z.record(z.string(), attributeValue);
const getItemOutput = z.object({ Item: z.optional(item) });
const queryOutput = z.object({
  Items: z.optional(z.array(item)),
  // Handed back as ExclusiveStartKey: it stays in wire form.
  LastEvaluatedKey: z.optional(z.record(z.string(), z.unknown())),
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

/** The SDK's union type says one member per value; the schema checked each member's type. */
function unmarshallItem(wire: z.output<typeof item>): RegistryItem {
  return toNative(wire as Record<string, AttributeValue>);
}

/**
 * One attribute value from the wire, as the DocumentClient gives it: N as a number (a BigInt beyond
 * the safe integers), NS/SS/BS as a Set, B as a Uint8Array, NULL as null.
 */
export function unmarshall(attribute: unknown): unknown {
  const parsed = attributeValue.safeParse(attribute);
  if (!parsed.success) {
    throw new Error(
      `DynamoDB sent an attribute value this reader cannot decode: ${JSON.stringify(attribute)} (${z.prettifyError(parsed.error)})`,
    );
  }
  return toNative(parsed.data as AttributeValue, { convertWithoutMapWrapper: true });
}
