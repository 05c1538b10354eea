import type { Server } from "node:http";
import { text } from "node:stream/consumers";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { DynamoDBDocumentClient } from "@aws-sdk/lib-dynamodb";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AwsHttpClient } from "#aws/http/aws-http.ts";
import { DynamoHttpTable, unmarshall } from "#aws/registry/dynamo-http-table.ts";
import { DocumentClientTable } from "#aws/registry/dynamo-registry.ts";
import { RegistryReader } from "#aws/registry/reader.ts";
import { closeServer, listenLocally } from "../support/local-http.ts";

const REGION = "us-east-1";
const CREDENTIALS = { accessKeyId: "AKIDTEST", secretAccessKey: "secret" };
const TABLE = "maas-registry";

/** One attribute of every type DynamoDB's JSON protocol has, as it arrives on the wire. */
const WIRE_ITEM = {
  pk: { S: "iris" },
  sk: { S: "m" },
  text: { S: "ünïcödé ✓" },
  empty: { S: "" },
  integer: { N: "42" },
  negative: { N: "-0.125" },
  exponent: { N: "1E+3" },
  huge: { N: "123456789012345678901234567890" },
  yes: { BOOL: true },
  no: { BOOL: false },
  nothing: { NULL: true },
  bytes: { B: "AAEC/w==" },
  map: { M: { nested: { M: { deep: { L: [{ N: "1" }, { S: "two" }, { NULL: true }] } } } } },
  list: { L: [{ M: {} }, { L: [] }, { BOOL: false }] },
  strings: { SS: ["b", "a"] },
  versions: { NS: ["3", "1", "2"] },
  blobs: { BS: ["AQ==", "Ag=="] },
};

let server: Server;
let endpoint: string;
/** Query pages to answer, in order; GetItem always answers WIRE_ITEM. */
let pages: Record<string, unknown>[] = [];
let requests: { target: string; body: Record<string, unknown> }[] = [];

beforeAll(async () => {
  ({ server, endpoint } = await listenLocally(async (request, response) => {
    const body = JSON.parse(await text(request)) as Record<string, unknown>;
    const target = String(request.headers["x-amz-target"]);
    requests.push({ target, body });
    const answer = target.endsWith(".GetItem") ? { Item: WIRE_ITEM } : (pages.shift() ?? { Items: [] });
    response.writeHead(200, { "content-type": "application/x-amz-json-1.0" }).end(JSON.stringify(answer));
  }));
});

beforeEach(() => {
  pages = [];
  requests = [];
});

afterAll(() => closeServer(server));

const lean = () =>
  new DynamoHttpTable(
    new AwsHttpClient("dynamodb", { region: REGION, credentials: CREDENTIALS, endpoint }),
    TABLE,
  );
const sdk = () =>
  new DocumentClientTable(
    DynamoDBDocumentClient.from(new DynamoDBClient({ region: REGION, credentials: CREDENTIALS, endpoint })),
    TABLE,
  );

describe("DynamoHttpTable", () => {
  it("unmarshalls every attribute type exactly as the DocumentClient does", async () => {
    const ours = await lean().get({ pk: "iris", sk: "m" }, false);
    const theirs = await sdk().get({ pk: "iris", sk: "m" }, false);

    expect(ours).toStrictEqual(theirs);
    expect(ours?.versions).toEqual(new Set([1, 2, 3]));
    expect(ours?.huge).toBe(123456789012345678901234567890n);
    expect(ours?.bytes).toStrictEqual(Uint8Array.of(0, 1, 2, 255));
  });

  it("sends GetItem in the JSON protocol with the key as strings and the read consistency asked for", async () => {
    await lean().get({ pk: "iris", sk: "v#0000000001" }, true);

    expect(requests).toEqual([
      {
        target: "DynamoDB_20120810.GetItem",
        body: {
          TableName: TABLE,
          Key: { pk: { S: "iris" }, sk: { S: "v#0000000001" } },
          ConsistentRead: true,
        },
      },
    ]);
  });

  it("pages a query with Limit and hands each LastEvaluatedKey back as ExclusiveStartKey", async () => {
    const head = (name: string) => ({
      pk: { S: name },
      sk: { S: "m" },
      gsi1pk: { S: "model" },
      gsi1sk: { S: name },
      versions: { NS: ["2", "10"] },
    });
    const lastKey = { pk: { S: "a" }, sk: { S: "m" }, gsi1pk: { S: "model" }, gsi1sk: { S: "a" } };
    pages = [{ Items: [head("a")], LastEvaluatedKey: lastKey }, { Items: [head("b")] }];

    const models = await new RegistryReader(lean(), { pageSize: 1 }).listModels();

    expect(models).toEqual([
      { name: "a", versions: [2, 10] },
      { name: "b", versions: [2, 10] },
    ]);
    expect(requests.map((request) => request.body)).toEqual([
      {
        TableName: TABLE,
        IndexName: "models",
        KeyConditionExpression: "gsi1pk = :head",
        ExpressionAttributeValues: { ":head": { S: "model" } },
        Limit: 1,
      },
      {
        TableName: TABLE,
        IndexName: "models",
        KeyConditionExpression: "gsi1pk = :head",
        ExpressionAttributeValues: { ":head": { S: "model" } },
        Limit: 1,
        ExclusiveStartKey: lastKey,
      },
    ]);
  });

  it("refuses an attribute value it does not know instead of guessing", () => {
    expect(() => unmarshall({ X: "?" })).toThrow(/cannot decode: \{"X":"\?"\}/);
    expect(() => unmarshall({ N: 5 })).toThrow(/where a string belongs/);
  });
});
