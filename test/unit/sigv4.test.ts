import { Hash } from "@smithy/hash-node";
import { SignatureV4 } from "@smithy/signature-v4";
import { describe, expect, it } from "vitest";
import { type AwsCredentials, encodeRfc3986, signRequest, UNSIGNED_PAYLOAD } from "#aws/http/sigv4.ts";

const LONG_TERM: AwsCredentials = {
  accessKeyId: "AKIDEXAMPLE",
  secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
};
const TEMPORARY: AwsCredentials = {
  accessKeyId: "ASIAEXAMPLE",
  secretAccessKey: "c2VjcmV0L3dpdGgrc2xhc2hlcw==",
  sessionToken: "IQoJb3JpZ2luX2VjEXAMPLE//token+with/odd=chars",
};
const DATES = [new Date("2026-03-01T00:00:00Z"), new Date("2026-12-31T23:59:59.999Z")];

/** One request, described as the SDK's signer takes it. */
interface RequestToSign {
  service: "s3" | "dynamodb";
  region: string;
  credentials: AwsCredentials;
  date: Date;
  method: string;
  /** @default "https:" */
  protocol?: "http:" | "https:";
  host: string;
  /** Percent-encoded, as it goes on the wire. */
  path: string;
  query?: Record<string, string>;
  headers?: Record<string, string>;
  /** Absent: an unsigned payload (`UNSIGNED-PAYLOAD`), as S3 GETs send. */
  body?: string;
}

/** The SDK's signer, configured as the S3 and DynamoDB clients configure it. */
async function sdkAuthorization(options: RequestToSign): Promise<Record<string, string>> {
  const s3 = options.service === "s3";
  const signer = new SignatureV4({
    service: options.service,
    region: options.region,
    credentials: options.credentials,
    sha256: Hash.bind(null, "sha256"),
    uriEscapePath: !s3,
    applyChecksum: s3,
  });
  const signed = await signer.sign(
    {
      method: options.method,
      protocol: options.protocol ?? "https:",
      hostname: options.host,
      path: options.path,
      query: options.query ?? {},
      headers: {
        host: options.host,
        ...options.headers,
        ...(s3 && options.body === undefined ? { "x-amz-content-sha256": "UNSIGNED-PAYLOAD" } : {}),
      },
      body: options.body,
    },
    { signingDate: options.date },
  );
  return signed.headers;
}

/** Signs one request with signRequest and with the SDK's signer, so both get the same input. */
async function signBoth(
  request: RequestToSign,
): Promise<{ ours: Record<string, string>; sdk: Record<string, string> }> {
  const search = Object.entries(request.query ?? {})
    .map(([name, value]) => `${encodeRfc3986(name)}=${encodeRfc3986(value)}`)
    .join("&");
  const ours = signRequest({
    method: request.method,
    url: new URL(
      `${request.protocol ?? "https:"}//${request.host}${request.path}${search ? `?${search}` : ""}`,
    ),
    headers: request.headers,
    body: request.body ?? UNSIGNED_PAYLOAD,
    service: request.service,
    region: request.region,
    credentials: request.credentials,
    date: request.date,
  });
  return { ours, sdk: await sdkAuthorization(request) };
}

const objectPath = (key: string) => key.split("/").map(encodeRfc3986).join("/");

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

describe("signRequest against the SDK's SignatureV4", () => {
  it.each(S3_KEYS)("signs an S3 GET (unsigned payload) of key %j byte-identically", async (key) => {
    for (const credentials of [LONG_TERM, TEMPORARY]) {
      for (const date of DATES) {
        const { ours, sdk } = await signBoth({
          service: "s3",
          region: "eu-west-1",
          credentials,
          date,
          method: "GET",
          host: "maas-models.s3.eu-west-1.amazonaws.com",
          path: `/${objectPath(key)}`,
        });

        expect(ours.authorization).toBe(sdk.authorization);
        expect(ours).toEqual(sdk);
      }
    }
  });

  it("signs a path-style S3 GET on a custom endpoint with a port, and a query, byte-identically", async () => {
    const { ours, sdk } = await signBoth({
      service: "s3",
      region: "us-east-1",
      credentials: TEMPORARY,
      date: DATES[0] as Date,
      method: "GET",
      protocol: "http:",
      host: "127.0.0.1:4566",
      path: `/maas-models/${objectPath("models/a b/model.onnx")}`,
      query: { versionId: "3/L4kqtJl+cV==", "response-content-type": "text/plain; charset=utf-8" },
    });

    expect(ours.authorization).toBe(sdk.authorization);
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
  ])("signs a DynamoDB %s POST with a JSON body byte-identically", async (operation, input) => {
    for (const credentials of [LONG_TERM, TEMPORARY]) {
      for (const date of DATES) {
        const { ours, sdk } = await signBoth({
          service: "dynamodb",
          region: "cn-north-1",
          credentials,
          date,
          method: "POST",
          host: "dynamodb.cn-north-1.amazonaws.com.cn",
          path: "/",
          headers: {
            "content-type": "application/x-amz-json-1.0",
            "x-amz-target": `DynamoDB_20120810.${operation}`,
          },
          body: JSON.stringify(input),
        });

        expect(ours.authorization).toBe(sdk.authorization);
        expect(ours).toEqual(sdk);
      }
    }
  });

  it("encodes a non-S3 path twice and normalizes it, as the SDK does", async () => {
    const host = "runtime.sagemaker.us-east-1.amazonaws.com";
    const path = `/endpoints/${encodeRfc3986("my endpoint+1")}/./x/../invocations`;

    const ours = signRequest({
      method: "POST",
      url: new URL(`https://${host}${path}`),
      headers: { "content-type": "application/json" },
      body: "{}",
      service: "sagemaker",
      region: "us-east-1",
      credentials: LONG_TERM,
      date: DATES[1],
    });
    const signer = new SignatureV4({
      service: "sagemaker",
      region: "us-east-1",
      credentials: LONG_TERM,
      sha256: Hash.bind(null, "sha256"),
      applyChecksum: false,
    });
    const sdk = await signer.sign(
      {
        method: "POST",
        protocol: "https:",
        hostname: host,
        path: `/endpoints/${encodeRfc3986("my endpoint+1")}/invocations`,
        query: {},
        headers: { host, "content-type": "application/json" },
        body: "{}",
      },
      { signingDate: DATES[1] },
    );

    expect(ours.authorization).toBe(sdk.headers.authorization);
  });
});

describe("signRequest against published examples", () => {
  it("matches the IAM ListUsers example of the Signature Version 4 documentation", () => {
    const headers = signRequest({
      method: "GET",
      url: new URL("https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08"),
      headers: { "content-type": "application/x-www-form-urlencoded; charset=utf-8" },
      service: "iam",
      region: "us-east-1",
      credentials: LONG_TERM,
      date: new Date("2015-08-30T12:36:00Z"),
    });

    expect(headers.authorization).toBe(
      "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, " +
        "SignedHeaders=content-type;host;x-amz-date, " +
        "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
    );
  });

  it("matches the GET Object example of the Amazon S3 documentation", () => {
    const headers = signRequest({
      method: "GET",
      url: new URL("https://examplebucket.s3.amazonaws.com/test.txt"),
      headers: { range: "bytes=0-9" },
      service: "s3",
      region: "us-east-1",
      credentials: {
        accessKeyId: "AKIAIOSFODNN7EXAMPLE",
        secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
      },
      date: new Date("2013-05-24T00:00:00Z"),
    });

    expect(headers.authorization).toBe(
      "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, " +
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, " +
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
    );
  });
});

describe("signRequest headers", () => {
  it("adds the session token and the S3 payload hash, and leaves DynamoDB without one", () => {
    const url = new URL("https://dynamodb.us-east-1.amazonaws.com/");

    const dynamo = signRequest({
      method: "POST",
      url,
      body: "{}",
      service: "dynamodb",
      region: "us-east-1",
      credentials: TEMPORARY,
    });
    const s3 = signRequest({
      method: "GET",
      url: new URL("https://b.s3.us-east-1.amazonaws.com/k"),
      body: UNSIGNED_PAYLOAD,
      service: "s3",
      region: "us-east-1",
      credentials: LONG_TERM,
    });

    expect(dynamo["x-amz-security-token"]).toBe(TEMPORARY.sessionToken);
    expect(dynamo["x-amz-content-sha256"]).toBeUndefined();
    expect(dynamo.authorization).toContain("SignedHeaders=host;x-amz-date;x-amz-security-token,");
    expect(s3["x-amz-content-sha256"]).toBe("UNSIGNED-PAYLOAD");
    expect(s3["x-amz-security-token"]).toBeUndefined();
  });

  it("encodes everything but RFC 3986's unreserved characters", () => {
    expect(encodeRfc3986("a-z_A.Z~0 9+=/!'()*ü")).toBe("a-z_A.Z~0%209%2B%3D%2F%21%27%28%29%2A%C3%BC");
  });
});
