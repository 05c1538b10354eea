/**
 * The local stack is closed to the network: every port it opens listens on loopback, and its S3 endpoint
 * takes only requests signed with the stack's own credentials.
 */
import { readdir, readFile, readlink } from "node:fs/promises";
import { HeadObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { Hash } from "@smithy/hash-node";
import { SignatureV4 } from "@smithy/signature-v4";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEmulators } from "../../local/emulators.ts";
import type { LocalStack } from "../../local/stack.ts";
import { buildIrisModel } from "../../models/iris.ts";
import { startTestStack, stopTestStack } from "../support/local-stack.ts";

let stack: LocalStack;
let dataDir: string;
let listeningBefore: Set<string>;

beforeAll(async () => {
  listeningBefore = new Set((await listeningSockets()).map((socket) => socket.inode));
  ({ stack, dataDir } = await startTestStack("network", { demo: false }));
});

afterAll(() => stopTestStack(stack, dataDir));

describe("where the local stack listens", () => {
  it("opens every listening socket on 127.0.0.1 only", async () => {
    const opened = (await listeningSockets()).filter((socket) => !listeningBefore.has(socket.inode));

    // API gateway, S3 gate, fauxqs behind it, dynalite, the SageMaker stand-in and its container server.
    expect(opened.length).toBeGreaterThanOrEqual(5);
    expect(opened.map((socket) => socket.address)).toEqual(opened.map(() => "127.0.0.1"));
    for (const url of [stack.url, stack.emulators.s3Endpoint, stack.emulators.dynamoEndpoint]) {
      expect(opened.map((socket) => socket.port)).toContain(Number(new URL(url).port));
    }
  });

  it("opens the S3 endpoint to the network only when asked, and still names it by loopback", async () => {
    const emulators = await startEmulators({
      dataDir: `${dataDir}/wide`,
      s3Port: 0,
      host: "0.0.0.0",
      bucket: "wide",
      table: "wide",
    });
    try {
      expect(emulators.servers.s3.address()).toMatchObject({ address: "0.0.0.0" });
      expect(emulators.servers.dynamo.address()).toMatchObject({ address: "127.0.0.1" });
      expect(emulators.s3Endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    } finally {
      await emulators.stop();
    }
  });
});

describe("the local S3 endpoint", () => {
  const key = (name: string) => `models/${name}/1/model.onnx`;
  const objectUrl = (name: string) => `${stack.emulators.s3Endpoint}/${stack.bucket}/${key(name)}`;

  async function exists(name: string): Promise<boolean> {
    return stack.emulators
      .s3Client()
      .send(new HeadObjectCommand({ Bucket: stack.bucket, Key: key(name) }))
      .then(
        () => true,
        (error: unknown) => {
          if ((error as { name?: string }).name === "NotFound") return false;
          throw error;
        },
      );
  }

  async function putWith(credentials: { accessKeyId: string; secretAccessKey: string }, name: string) {
    const s3 = new S3Client({
      region: stack.emulators.region,
      endpoint: stack.emulators.s3Endpoint,
      forcePathStyle: true,
      credentials,
      maxAttempts: 1,
    });
    try {
      return await s3
        .send(new PutObjectCommand({ Bucket: stack.bucket, Key: key(name), Body: buildIrisModel() }))
        .then(
          () => undefined,
          (error: unknown) => error as { name: string; $metadata: { httpStatusCode?: number } },
        );
    } finally {
      s3.destroy();
    }
  }

  it("refuses an unsigned PUT with S3's 403 AccessDenied, and stores nothing", async () => {
    const response = await fetch(objectUrl("unsigned"), { method: "PUT", body: buildIrisModel() });

    expect(response.status).toBe(403);
    expect(await response.text()).toContain("<Code>AccessDenied</Code>");
    expect(await exists("unsigned")).toBe(false);
  });

  it("refuses an unsigned SQS call on the same port", async () => {
    const response = await fetch(stack.emulators.s3Endpoint, {
      method: "POST",
      headers: { "x-amz-target": "AmazonSQS.ListQueues", "content-type": "application/x-amz-json-1.0" },
      body: "{}",
    });

    expect(response.status).toBe(403);
  });

  it("refuses a PUT signed with the wrong secret (SignatureDoesNotMatch) and stores nothing", async () => {
    const error = await putWith(
      { accessKeyId: stack.emulators.credentials.accessKeyId, secretAccessKey: "x" },
      "badsecret",
    );

    expect(error?.$metadata.httpStatusCode).toBe(403);
    expect(error?.name).toBe("SignatureDoesNotMatch");
    expect(await exists("badsecret")).toBe(false);
  });

  it("refuses a PUT signed with another access key (InvalidAccessKeyId)", async () => {
    const error = await putWith({ accessKeyId: "AKIDSOMEONEELSE", secretAccessKey: "local" }, "badkey");

    expect(error?.$metadata.httpStatusCode).toBe(403);
    expect(error?.name).toBe("InvalidAccessKeyId");
    expect(await exists("badkey")).toBe(false);
  });

  it("takes a presigned PUT URL, and refuses it once its key is changed", async () => {
    const url = new URL(objectUrl("presigned"));
    const presigned = await new SignatureV4({
      credentials: stack.emulators.credentials,
      region: stack.emulators.region,
      service: "s3",
      sha256: Hash.bind(null, "sha256"),
      uriEscapePath: false,
    }).presign(
      {
        method: "PUT",
        protocol: "http:",
        hostname: url.hostname,
        port: Number(url.port),
        path: url.pathname,
        query: {},
        // As the SDK's presigner: the payload is unsigned.
        headers: { host: url.host, "x-amz-content-sha256": "UNSIGNED-PAYLOAD" },
      },
      { expiresIn: 60 },
    );
    const query = new URLSearchParams(presigned.query as Record<string, string>).toString();
    const signedUrl = `${stack.emulators.s3Endpoint}${presigned.path}?${query}`;

    const tampered = await fetch(signedUrl.replace("/presigned/", "/tampered/"), {
      method: "PUT",
      body: "x",
    });
    const accepted = await fetch(signedUrl, { method: "PUT", body: "onnx" });

    expect(tampered.status).toBe(403);
    expect(await tampered.text()).toContain("<Code>SignatureDoesNotMatch</Code>");
    expect(accepted.status).toBe(200);
    expect(await exists("presigned")).toBe(true);
    expect(await exists("tampered")).toBe(false);
  });

  it("takes a PUT signed through the SDK with the stack's credentials, and registers the model", async () => {
    const error = await putWith(stack.emulators.credentials, "signed");
    const version = await stack.waitForVersion("signed", 1, 30_000);

    expect(error).toBeUndefined();
    // Registered and servable; the optimizer may already have claimed it.
    expect(["ready", "optimizing"]).toContain(version.status);
  });
});

interface ListeningSocket {
  readonly inode: string;
  readonly address: string;
  readonly port: number;
}

/** This process's listening TCP sockets, from /proc: its socket inodes matched against /proc/net/tcp{,6}. */
async function listeningSockets(): Promise<ListeningSocket[]> {
  const fds = await readdir("/proc/self/fd");
  const links = await Promise.all(fds.map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => "")));
  const owned = new Set(links.flatMap((link) => /^socket:\[(\d+)\]$/.exec(link)?.[1] ?? []));
  const sockets: ListeningSocket[] = [];
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    const lines = (await readFile(table, "utf8")).trim().split("\n").slice(1);
    for (const line of lines) {
      const fields = line.trim().split(/\s+/);
      const [local, , state] = fields.slice(1, 4);
      const inode = fields[9];
      if (state !== "0A" || inode === undefined || !owned.has(inode) || local === undefined) continue;
      const [hexAddress = "", hexPort = "0"] = local.split(":");
      sockets.push({ inode, address: decodeAddress(hexAddress), port: Number.parseInt(hexPort, 16) });
    }
  }
  return sockets;
}

/** /proc/net's little-endian hex address; IPv6 wildcards and v4-mapped loopback are named as such. */
function decodeAddress(hex: string): string {
  if (hex.length === 8) {
    return (hex.match(/../g) ?? [])
      .map((byte) => Number.parseInt(byte, 16))
      .reverse()
      .join(".");
  }
  if (hex === "0000000000000000FFFF00000100007F") return "127.0.0.1";
  return `ipv6:${hex}`;
}
