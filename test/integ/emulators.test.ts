import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DescribeTableCommand, GetItemCommand, PutItemCommand } from "@aws-sdk/client-dynamodb";
import { GetObjectCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { REGISTRY_KEYS } from "#aws/registry/table.ts";
import { type EmulatorOptions, type Emulators, startEmulators } from "../../local/emulators.ts";

const BUCKET = "maas-models";
const TABLE = "maas-registry";
const KEY = "models/mnist/1/model.onnx";
const HEAD_ITEM = { pk: { S: "mnist" }, sk: { S: "m" }, gsi1pk: { S: "model" }, gsi1sk: { S: "mnist" } };

let dataDir: string;
const running: Emulators[] = [];

async function start(overrides: Partial<EmulatorOptions> = {}): Promise<Emulators> {
  const emulators = await startEmulators({
    dataDir,
    s3Port: 0,
    bucket: BUCKET,
    table: TABLE,
    queues: [{ name: "register" }],
    ...overrides,
  });
  running.push(emulators);
  return emulators;
}

async function stop(emulators: Emulators): Promise<void> {
  running.splice(running.indexOf(emulators), 1);
  await emulators.stop();
}

beforeEach(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "maas-emulators-"));
});

afterEach(async () => {
  await Promise.all(running.splice(0).map((emulators) => emulators.stop()));
  await rm(dataDir, { recursive: true, force: true });
});

describe("local emulators", () => {
  it("serves S3 on 127.0.0.1: an object put is read back", async () => {
    const emulators = await start();
    const s3 = emulators.s3Client();

    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: KEY, Body: "onnx-bytes" }));
    const got = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: KEY }));

    expect(emulators.s3Endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(await got.Body?.transformToString()).toBe("onnx-bytes");
  });

  it("creates the registry table, active with its models index, and it accepts a put and a get", async () => {
    const emulators = await start();
    const dynamo = emulators.dynamoClient();

    const described = await dynamo.send(new DescribeTableCommand({ TableName: TABLE }));
    await dynamo.send(new PutItemCommand({ TableName: TABLE, Item: HEAD_ITEM }));
    const got = await dynamo.send(
      new GetItemCommand({ TableName: TABLE, Key: { pk: HEAD_ITEM.pk, sk: HEAD_ITEM.sk } }),
    );

    expect(emulators.dynamoEndpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(described.Table?.TableStatus).toBe("ACTIVE");
    expect(described.Table?.GlobalSecondaryIndexes?.map((index) => index.IndexName)).toEqual([
      REGISTRY_KEYS.modelsIndex,
    ]);
    expect(got.Item).toEqual(HEAD_ITEM);
  });

  it("creates the requested queues", async () => {
    const emulators = await start({ queues: [{ name: "register" }, { name: "optimize" }] });

    const register = emulators.fauxqs.inspectQueue("register");
    const optimize = emulators.fauxqs.inspectQueue("optimize");

    expect(register?.name).toBe("register");
    expect(optimize?.name).toBe("optimize");
  });

  it("reports each S3 upload through the fauxqs message spy", async () => {
    const emulators = await start();

    await emulators.s3Client().send(new PutObjectCommand({ Bucket: BUCKET, Key: KEY, Body: "onnx-bytes" }));
    const event = await emulators.fauxqs.spy.waitForMessage({ service: "s3", key: KEY }, "uploaded", 2_000);

    expect(event).toMatchObject({ service: "s3", bucket: BUCKET, key: KEY, status: "uploaded" });
  });

  it("keeps objects, registry items and queued messages across a restart on the same dataDir", async () => {
    const first = await start();
    await first.s3Client().send(new PutObjectCommand({ Bucket: BUCKET, Key: KEY, Body: "onnx-bytes" }));
    await first.dynamoClient().send(new PutItemCommand({ TableName: TABLE, Item: HEAD_ITEM }));
    first.fauxqs.sendMessage("register", "pending-work");
    await stop(first);

    const second = await start();
    const object = await second.s3Client().send(new GetObjectCommand({ Bucket: BUCKET, Key: KEY }));
    const item = await second
      .dynamoClient()
      .send(new GetItemCommand({ TableName: TABLE, Key: { pk: HEAD_ITEM.pk, sk: HEAD_ITEM.sk } }));
    const queued = second.fauxqs.inspectQueue("register")?.messages.ready.map((message) => message.body);

    expect(await object.Body?.transformToString()).toBe("onnx-bytes");
    expect(item.Item).toEqual(HEAD_ITEM);
    expect(queued).toEqual(["pending-work"]);
  });

  it("refuses a dataDir that another running stack holds, naming MAAS_DATA_DIR", async () => {
    await start();

    const second = start();

    await expect(second).rejects.toThrow(/in use by another running local stack.*MAAS_DATA_DIR/);
  });

  it("names the port and MAAS_S3_PORT when the S3 port is taken, and leaves dataDir usable", async () => {
    const blocker = await occupyPort("0.0.0.0");
    const port = portOf(blocker);

    try {
      await expect(start({ s3Port: port })).rejects.toThrow(new RegExp(`port ${port}.*Set MAAS_S3_PORT`));
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
    const emulators = await start();

    expect(emulators.fauxqs.inspectQueue("register")).toBeDefined();
  });

  it("names the port when the DynamoDB port is taken, and leaves dataDir usable", async () => {
    const blocker = await occupyPort("127.0.0.1");
    const port = portOf(blocker);

    try {
      await expect(start({ dynamoPort: port })).rejects.toThrow(new RegExp(`port ${port}`));
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
    const emulators = await start();

    expect(
      (await emulators.dynamoClient().send(new DescribeTableCommand({ TableName: TABLE }))).Table,
    ).toBeDefined();
  });
});

function occupyPort(host: string): Promise<Server> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, host, () => resolve(server));
  });
}

function portOf(server: Server): number {
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("server is not listening on TCP");
  return address.port;
}
