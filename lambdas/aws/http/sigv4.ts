import { createHash, createHmac } from "node:crypto";
import { safeDecode } from "#core/v2/routes.ts";

/**
 * AWS Signature Version 4 for the inference function's own requests (S3 GetObject, DynamoDB reads),
 * on node:crypto alone: the SDK's signer comes with the SDK clients whose import we avoid.
 */

export interface AwsCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

/** Stands for a body that is not hashed: S3 accepts `UNSIGNED-PAYLOAD` in place of the digest. */
export const UNSIGNED_PAYLOAD: unique symbol = Symbol("UNSIGNED-PAYLOAD");

export interface SigningInput {
  readonly method: string;
  /** Path segments and query as they go on the wire, percent-encoded per RFC 3986 (see encodeRfc3986). */
  readonly url: URL;
  /** Every header given is signed; `host` is taken from the URL. */
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: string | Uint8Array | typeof UNSIGNED_PAYLOAD;
  readonly service: string;
  readonly region: string;
  readonly credentials: AwsCredentials;
  /** @default now */
  readonly date?: Date;
}

const ALGORITHM = "AWS4-HMAC-SHA256";

function sha256Hex(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac("sha256", key).update(data, "utf8").digest();
}

/** encodeURIComponent leaves `!'()*` as they are; SigV4 wants everything but A-Z a-z 0-9 - . _ ~ encoded. */
export function encodeRfc3986(text: string): string {
  return encodeURIComponent(text).replace(
    /[!'()*]/g,
    (char) => `%${char.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/**
 * S3 signs each path segment encoded once, as sent, and keeps empty and dot segments (they are part of
 * keys); every other service normalizes the path and encodes each segment a second time.
 */
function canonicalPath(pathname: string, service: string): string {
  if (service === "s3")
    return pathname
      .split("/")
      .map((s) => encodeRfc3986(safeDecode(s)))
      .join("/");
  const segments: string[] = [];
  for (const segment of pathname.split("/")) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") segments.pop();
    else segments.push(encodeRfc3986(encodeRfc3986(safeDecode(segment))));
  }
  const trailing = segments.length > 0 && pathname.endsWith("/") ? "/" : "";
  return `/${segments.join("/")}${trailing}`;
}

/** Parameters encoded per RFC 3986 and sorted by name, then value. `+` is a plus sign here, not a space. */
function canonicalQuery(search: string): string {
  if (search.length <= 1) return "";
  const pairs = search
    .slice(1)
    .split("&")
    .filter((pair) => pair.length > 0)
    .map((pair) => {
      const at = pair.indexOf("=");
      const name = at === -1 ? pair : pair.slice(0, at);
      const value = at === -1 ? "" : pair.slice(at + 1);
      return [encodeRfc3986(safeDecode(name)), encodeRfc3986(safeDecode(value))] as const;
    });
  pairs.sort(([nameA, valueA], [nameB, valueB]) =>
    nameA === nameB ? compare(valueA, valueB) : compare(nameA, nameB),
  );
  return pairs.map(([name, value]) => `${name}=${value}`).join("&");
}

const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** Keyed by everything it derives from; a function signs for one or two scopes a day, so it stays tiny. */
const signingKeys = new Map<string, Buffer>();
const MAX_SIGNING_KEYS = 32;

function signingKey(secret: string, day: string, region: string, service: string): Buffer {
  const id = `${day}/${region}/${service}/${secret}`;
  let key = signingKeys.get(id);
  if (key === undefined) {
    key = hmac(hmac(hmac(hmac(`AWS4${secret}`, day), region), service), "aws4_request");
    if (signingKeys.size >= MAX_SIGNING_KEYS) signingKeys.clear();
    signingKeys.set(id, key);
  }
  return key;
}

/** `20150830T123600Z` */
function amzDate(date: Date): string {
  return date
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d{3}/, "");
}

/**
 * The headers to send: the caller's, `host`, `x-amz-date`, `x-amz-security-token` with temporary
 * credentials, `x-amz-content-sha256` for S3, and `authorization`.
 */
export function signRequest(input: SigningInput): Record<string, string> {
  const { credentials, region, service, url } = input;
  const stamp = amzDate(input.date ?? new Date());
  const day = stamp.slice(0, 8);
  const payloadHash = input.body === UNSIGNED_PAYLOAD ? "UNSIGNED-PAYLOAD" : sha256Hex(input.body ?? "");

  const headers: Record<string, string> = { host: url.host };
  for (const [name, value] of Object.entries(input.headers ?? {})) headers[name.toLowerCase()] = value;
  headers["x-amz-date"] = stamp;
  if (credentials.sessionToken) headers["x-amz-security-token"] = credentials.sessionToken;
  if (service === "s3") headers["x-amz-content-sha256"] = payloadHash;

  const names = Object.keys(headers).sort(compare);
  const signedHeaders = names.join(";");
  const canonicalRequest = [
    input.method.toUpperCase(),
    canonicalPath(url.pathname, service),
    canonicalQuery(url.search),
    ...names.map((name) => `${name}:${(headers[name] ?? "").trim().replace(/\s+/g, " ")}`),
    "",
    signedHeaders,
    payloadHash,
  ].join("\n");
  const scope = `${day}/${region}/${service}/aws4_request`;
  const stringToSign = [ALGORITHM, stamp, scope, sha256Hex(canonicalRequest)].join("\n");
  const signature = createHmac("sha256", signingKey(credentials.secretAccessKey, day, region, service))
    .update(stringToSign, "utf8")
    .digest("hex");
  headers.authorization =
    `${ALGORITHM} Credential=${credentials.accessKeyId}/${scope}, ` +
    `SignedHeaders=${signedHeaders}, Signature=${signature}`;
  return headers;
}
