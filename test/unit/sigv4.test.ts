import type { IncomingHttpHeaders, Server } from "node:http";
import { text } from "node:stream/consumers";
import { Hash } from "@smithy/hash-node";
import { SignatureV4 } from "@smithy/signature-v4";
import type { AwsCredentialIdentity } from "@smithy/types";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { AwsHttpClient, type AwsService } from "#aws/http/aws-http.ts";
import { encodeRfc3986, S3HttpArtifactSource, s3ObjectUrl } from "#aws/s3/http-source.ts";
import { closeServer, listenLocally } from "../support/local-http.ts";

/**
 * The signatures AwsHttpClient sends, checked as the service would check them: recomputed with the
 * SDK's SignatureV4 from the request that arrived (its path, query, signed headers and body).
 */
const LONG_TERM: AwsCredentialIdentity = {
  accessKeyId: "AKIDEXAMPLE",
  secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
};
const TEMPORARY: AwsCredentialIdentity = {
  accessKeyId: "ASIAEXAMPLE",
  secretAccessKey: "c2VjcmV0L3dpdGgrc2xhc2hlcw==",
  sessionToken: "IQoJb3JpZ2luX2VjEXAMPLE//token+with/odd=chars",
};
const DATES = [
  { date: new Date("2026-03-01T00:00:00Z"), stamp: "20260301T000000Z" },
  { date: new Date("2026-12-31T23:59:59.999Z"), stamp: "20261231T235959Z" },
];
const BUCKET = "maas-models";

interface Received {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

let server: Server;
let endpoint: string;
let received: Received[] = [];

beforeAll(async () => {
  ({ server, endpoint } = await listenLocally(async (request, response) => {
    const body = await text(request);
    received.push({ method: request.method ?? "", url: request.url ?? "", headers: request.headers, body });
    response.writeHead(200).end(request.method === "GET" ? "object-bytes" : "{}");
  }));
});

afterEach(() => {
  received = [];
  vi.useRealTimers();
});

afterAll(() => closeServer(server));

/** Signs at `date`: the client reads the clock, so the clock is set. */
function at(date: Date): void {
  vi.useFakeTimers({ toFake: ["Date"] });
  vi.setSystemTime(date);
}

function client(service: AwsService, region: string, credentials: AwsCredentialIdentity) {
  return new AwsHttpClient(service, { region, credentials, endpoint });
}

/** The only request the server received. */
function lastRequest(): Received {
  expect(received).toHaveLength(1);
  return received[0] as Received;
}

/**
 * The Authorization header a service computes for the request it received: the headers the request
 * says it signed, the path and query as they arrived, x-amz-date as the signing time.
 */
async function serviceAuthorization(
  request: Received,
  service: AwsService,
  region: string,
  credentials: AwsCredentialIdentity,
): Promise<string | undefined> {
  const signedHeaders = /SignedHeaders=([^,]+),/.exec(String(request.headers.authorization))?.[1] ?? "";
  const url = new URL(request.url, endpoint);
  const stamp = String(request.headers["x-amz-date"]);
  const signingDate = new Date(
    stamp.replace(/^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/, "$1-$2-$3T$4:$5:$6Z"),
  );
  const signer = new SignatureV4({
    service,
    region,
    credentials,
    sha256: Hash.bind(null, "sha256"),
    uriEscapePath: service !== "s3",
    applyChecksum: service === "s3",
  });
  const query: Record<string, string[]> = {};
  for (const [name, value] of url.searchParams) query[name] = [...(query[name] ?? []), value];
  const signed = await signer.sign(
    {
      method: request.method,
      protocol: url.protocol,
      hostname: url.hostname,
      path: url.pathname,
      query,
      headers: Object.fromEntries(
        signedHeaders.split(";").map((name) => [name, String(request.headers[name] ?? "")]),
      ),
      body: request.body,
    },
    { signingDate },
  );
  return signed.headers.authorization;
}

const S3_KEYS = [
  "models/iris/1/model.onnx",
  "artifacts/sha256/3f79bb7b435b05321651daefd374cdc681dc06faa65e374e38337b88ca046dea.onnx",
  "with space/and  two spaces.onnx",
  "ünïcödé/模型/モデル.onnx",
  "plus+equals=tilde~star*.onnx",
  "parens(1)!quote'.onnx",
  "nested//double/slash/",
  "percent%20literal%.onnx",
  "emoji-🙂/question?hash#amp&.onnx",
];

describe("AwsHttpClient signatures, recomputed from what the server received", () => {
  it.each(S3_KEYS)("signs an S3 GET (unsigned payload) of key %j as S3 verifies it", async (key) => {
    for (const credentials of [LONG_TERM, TEMPORARY]) {
      for (const { date, stamp } of DATES) {
        received = [];
        at(date);
        const s3 = client("s3", "eu-west-1", credentials);

        await text(await new S3HttpArtifactSource(s3).open({ bucket: BUCKET, key, sha256: "", bytes: 12 }));

        const request = lastRequest();
        expect(request.headers["x-amz-date"]).toBe(stamp);
        expect(request.headers["x-amz-content-sha256"]).toBe("UNSIGNED-PAYLOAD");
        expect(request.headers["x-amz-security-token"]).toBe(credentials.sessionToken);
        expect(request.headers.authorization).toContain(
          `Credential=${credentials.accessKeyId}/${stamp.slice(0, 8)}/eu-west-1/s3/aws4_request, ` +
            `SignedHeaders=host;x-amz-content-sha256;x-amz-date${credentials.sessionToken ? ";x-amz-security-token" : ""},`,
        );
        expect(request.headers.authorization).toBe(
          await serviceAuthorization(request, "s3", "eu-west-1", credentials),
        );
      }
    }
  });

  it("signs a path-style S3 GET with a query, each parameter encoded once", async () => {
    at(DATES[0]?.date as Date);
    const s3 = client("s3", "us-east-1", TEMPORARY);
    const url = s3ObjectUrl(s3, BUCKET, "models/a b/model.onnx");
    url.search = `versionId=${encodeRfc3986("3/L4kqtJl+cV==")}&response-content-type=${encodeRfc3986("text/plain; charset=utf-8")}`;

    await text((await s3.stream({ operation: "GetObject", method: "GET", url })).body);

    const request = lastRequest();
    expect(request.url).toBe(
      "/maas-models/models/a%20b/model.onnx?versionId=3%2FL4kqtJl%2BcV%3D%3D&response-content-type=text%2Fplain%3B%20charset%3Dutf-8",
    );
    expect(request.headers.authorization).toBe(
      await serviceAuthorization(request, "s3", "us-east-1", TEMPORARY),
    );
  });

  it.each([
    ["GetItem", { TableName: "maas-registry", Key: { pk: { S: "iris" }, sk: { S: "v#0000000001" } } }],
    [
      "Query",
      {
        TableName: "maas-registry",
        KeyConditionExpression: "pk = :name AND begins_with(sk, :prefix)",
        ExpressionAttributeValues: { ":name": { S: "mödel" }, ":prefix": { S: "a#" } },
        ExclusiveStartKey: { pk: { S: "mödel" }, sk: { S: "a#stable" } },
        Limit: 2,
      },
    ],
  ])("signs a DynamoDB %s POST with its JSON body as DynamoDB verifies it", async (operation, input) => {
    for (const credentials of [LONG_TERM, TEMPORARY]) {
      for (const { date, stamp } of DATES) {
        received = [];
        at(date);
        const dynamo = client("dynamodb", "cn-north-1", credentials);

        await dynamo.json({
          operation,
          method: "POST",
          url: dynamo.endpoint,
          headers: {
            "content-type": "application/x-amz-json-1.0",
            "x-amz-target": `DynamoDB_20120810.${operation}`,
          },
          body: JSON.stringify(input),
        });

        const request = lastRequest();
        expect(request.body).toBe(JSON.stringify(input));
        expect(request.headers["x-amz-date"]).toBe(stamp);
        expect(request.headers.authorization).toContain(
          `Credential=${credentials.accessKeyId}/${stamp.slice(0, 8)}/cn-north-1/dynamodb/aws4_request, ` +
            `SignedHeaders=content-type;host;x-amz-date;${credentials.sessionToken ? "x-amz-security-token;" : ""}x-amz-target,`,
        );
        expect(request.headers.authorization).toBe(
          await serviceAuthorization(request, "dynamodb", "cn-north-1", credentials),
        );
      }
    }
  });

  it("is told apart from a request signed with another secret", async () => {
    const dynamo = client("dynamodb", "us-east-1", LONG_TERM);

    await dynamo.json({ operation: "GetItem", method: "POST", url: dynamo.endpoint, body: "{}" });

    const request = lastRequest();
    const otherSecret = { ...LONG_TERM, secretAccessKey: `${LONG_TERM.secretAccessKey}x` };
    expect(request.headers.authorization).toBe(
      await serviceAuthorization(request, "dynamodb", "us-east-1", LONG_TERM),
    );
    expect(request.headers.authorization).not.toBe(
      await serviceAuthorization(request, "dynamodb", "us-east-1", otherSecret),
    );
  });
});

describe("AwsHttpClient signing headers", () => {
  it("adds the session token and the S3 payload hash, and leaves DynamoDB without one", async () => {
    const dynamoClient = client("dynamodb", "us-east-1", TEMPORARY);
    await dynamoClient.json({ operation: "GetItem", method: "POST", url: dynamoClient.endpoint, body: "{}" });
    const s3Client = client("s3", "us-east-1", LONG_TERM);
    await text(
      (await s3Client.stream({ operation: "GetObject", method: "GET", url: new URL("/b/k", endpoint) })).body,
    );

    const [dynamo, s3] = received.map((request) => request.headers);

    expect(dynamo?.["x-amz-security-token"]).toBe(TEMPORARY.sessionToken);
    expect(dynamo?.["x-amz-content-sha256"]).toBeUndefined();
    expect(dynamo?.authorization).toContain("SignedHeaders=host;x-amz-date;x-amz-security-token,");
    expect(s3?.["x-amz-content-sha256"]).toBe("UNSIGNED-PAYLOAD");
    expect(s3?.["x-amz-security-token"]).toBeUndefined();
  });

  it("encodes everything but RFC 3986's unreserved characters", () => {
    expect(encodeRfc3986("a-z_A.Z~0 9+=/!'()*ü")).toBe("a-z_A.Z~0%209%2B%3D%2F%21%27%28%29%2A%C3%BC");
  });
});
