/**
 * The local S3/SQS endpoint's front door: fauxqs accepts unsigned requests, so this node:http server
 * takes the public port, recomputes each request's SigV4 signature (Authorization header or presigned
 * X-Amz-* query) with the stack's own credentials, answers S3's XML error to anything unsigned or wrongly
 * signed, and streams the rest, unbuffered, to fauxqs on its loopback port.
 *
 *   const gate = await startSignatureGate({ port: 4566, host: "127.0.0.1", credentials, upstreamPort });
 *
 * Payloads are taken at their signed x-amz-content-sha256 value, as the brief for this gate asks; only an
 * SQS request without that header (the SDK hashes its JSON body) is read whole to hash it.
 */
import { randomUUID, timingSafeEqual } from "node:crypto";
import {
  Agent,
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { Hash } from "@smithy/hash-node";
import {
  ALGORITHM_IDENTIFIER,
  createScope,
  getCanonicalHeaders,
  SignatureV4,
  UNSIGNED_PAYLOAD,
} from "@smithy/signature-v4";
import type { AwsCredentialIdentity, HeaderBag, HttpRequest, QueryParameterBag } from "@smithy/types";
import { listen } from "./gateway.ts";
import { proxyRequest } from "./proxy.ts";

export interface SignatureGateOptions {
  /** Public port; 0 picks a free one. */
  readonly port: number;
  /** Address the public port listens on. */
  readonly host: string;
  /** The only credentials whose signatures are accepted. */
  readonly credentials: AwsCredentialIdentity;
  /** fauxqs's port on 127.0.0.1; 0 until it is known (setUpstreamPort), answered with a 503 meanwhile. */
  readonly upstreamPort: number;
}

export interface SignatureGate {
  readonly port: number;
  readonly server: Server;
  /** Where checked requests go, once fauxqs listens (it starts after the public port is taken). */
  setUpstreamPort(port: number): void;
  close(): Promise<void>;
}

/** S3's own limit on clock skew for header-signed requests. */
const MAX_SKEW_MS = 15 * 60 * 1000;
/** SigV4's longest presigned lifetime: 7 days. */
const MAX_EXPIRES_S = 7 * 24 * 60 * 60;
/** An SQS request body hashed in memory: SQS's own message limit is 1 MiB. */
const MAX_HASHED_BODY_BYTES = 2 * 1024 * 1024;
/** Services that fauxqs answers on this port. */
const SERVICES = new Set(["s3", "sqs"]);
// Not forwarded: they describe this hop, and the gate has already answered any 100-continue.
const HOP_HEADERS = new Set(["connection", "keep-alive", "expect", "proxy-connection", "upgrade"]);

/** A refusal, sent as S3's XML error. */
export class SignatureRefusedError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "SignatureRefusedError";
  }
}

/** What the request says it was signed with, before any check. */
interface ClaimedSignature {
  readonly accessKeyId: string;
  readonly shortDate: string;
  readonly region: string;
  readonly service: string;
  readonly signedHeaders: readonly string[];
  readonly signature: string;
  readonly longDate: string;
  /** Seconds, for a presigned URL. */
  readonly expires?: number;
}

/** SignatureV4's own canonical request and string to sign, fed with what was received. */
class SignatureRecomputer extends SignatureV4 {
  async recompute(request: HttpRequest, claim: ClaimedSignature, payloadHash: string): Promise<string> {
    const signable = new Set(claim.signedHeaders);
    const canonicalHeaders = getCanonicalHeaders(request, undefined, signable);
    const canonicalRequest = this.createCanonicalRequest(request, canonicalHeaders, payloadHash);
    const scope = createScope(claim.shortDate, claim.region, claim.service);
    const stringToSign = await this.createStringToSign(
      claim.longDate,
      scope,
      canonicalRequest,
      ALGORITHM_IDENTIFIER,
    );
    return this.sign(stringToSign, {
      signingDate: parseLongDate(claim.longDate),
      signingRegion: claim.region,
      signingService: claim.service,
    });
  }
}

export async function startSignatureGate(options: SignatureGateOptions): Promise<SignatureGate> {
  const signer = (service: string, uriEscapePath: boolean) =>
    new SignatureRecomputer({
      credentials: options.credentials,
      region: "us-east-1",
      service,
      sha256: Hash.bind(null, "sha256"),
      // As the SDK signs: S3 the path as sent, other services each segment escaped again.
      uriEscapePath,
    });
  const signers: Record<string, SignatureRecomputer> = { s3: signer("s3", false), sqs: signer("sqs", true) };
  const agent = new Agent({ keepAlive: true });
  let upstreamPort = options.upstreamPort;

  const handle = (req: IncomingMessage, res: ServerResponse, expectsContinue: boolean) => {
    // A request without a payload hash may need its body read to be checked: let it come now.
    const continueFirst = expectsContinue && req.headers["x-amz-content-sha256"] === undefined;
    if (continueFirst) res.writeContinue();
    verify(req, options.credentials, signers).then(
      (body) => {
        if (upstreamPort === 0) {
          refuse(req, res, new SignatureRefusedError(503, "ServiceUnavailable", "The emulator is starting."));
          return;
        }
        if (expectsContinue && !continueFirst) res.writeContinue();
        forward(req, res, body, upstreamPort, agent);
      },
      (error: unknown) => refuse(req, res, error),
    );
  };
  const server = createServer((req, res) => handle(req, res, false));
  // Refuse before the client sends a body it was about to stream.
  server.on("checkContinue", (req, res) => handle(req, res, true));
  const port = await listen(server, options.port, options.host, {
    service: "The S3/SQS emulator (fauxqs)",
    envVar: "MAAS_S3_PORT",
  });
  return {
    port,
    server,
    setUpstreamPort: (port) => {
      upstreamPort = port;
    },
    close: () =>
      new Promise((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
        agent.destroy();
      }),
  };
}

/**
 * Resolves when the signature is the stack's; with the body, when it had to be read to hash it.
 * Rejects with a SignatureRefusedError otherwise.
 */
async function verify(
  req: IncomingMessage,
  credentials: AwsCredentialIdentity,
  signers: Record<string, SignatureRecomputer>,
): Promise<Buffer | undefined> {
  const url = new URL(req.url ?? "/", "http://gate");
  const query = parseQuery(url.search);
  const presigned = query["X-Amz-Signature"] !== undefined;
  const claim = presigned ? claimFromQuery(query) : claimFromHeader(req.headers);

  if (claim.accessKeyId !== credentials.accessKeyId) {
    throw new SignatureRefusedError(
      403,
      "InvalidAccessKeyId",
      "The AWS Access Key Id you provided does not exist in our records.",
    );
  }
  const signer = signers[claim.service];
  if (signer === undefined || claim.longDate.slice(0, 8) !== claim.shortDate) {
    throw new SignatureRefusedError(
      400,
      "AuthorizationHeaderMalformed",
      "The credential scope is malformed.",
    );
  }
  assertFresh(claim);

  let body: Buffer | undefined;
  let payloadHash: string;
  const sha256Header = req.headers["x-amz-content-sha256"];
  if (presigned) payloadHash = UNSIGNED_PAYLOAD;
  else if (typeof sha256Header === "string") payloadHash = sha256Header;
  else if (claim.service === "s3") {
    throw new SignatureRefusedError(400, "InvalidRequest", "Missing required header x-amz-content-sha256.");
  } else {
    body = await readBody(req);
    payloadHash = await hashHex(body);
  }

  const headers: HeaderBag = {};
  for (const name of claim.signedHeaders) {
    const value = req.headers[name];
    if (value === undefined) {
      throw new SignatureRefusedError(403, "AccessDenied", `The signed header ${name} is missing.`);
    }
    headers[name] = Array.isArray(value) ? value.join(",") : value;
  }
  const request: HttpRequest = {
    method: req.method ?? "GET",
    protocol: "http:",
    hostname: url.hostname,
    // The S3 signer takes the path as sent; the others escape the decoded path themselves.
    path: claim.service === "s3" ? url.pathname : safeDecode(url.pathname),
    query,
    headers,
  };
  const expected = await signer.recompute(request, claim, payloadHash);
  if (!sameHex(expected, claim.signature)) {
    throw new SignatureRefusedError(
      403,
      "SignatureDoesNotMatch",
      "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
    );
  }
  return body;
}

function claimFromHeader(headers: IncomingHttpHeaders): ClaimedSignature {
  const authorization = headers.authorization;
  if (authorization === undefined) {
    throw new SignatureRefusedError(
      403,
      "AccessDenied",
      "Anonymous access is not allowed: sign the request.",
    );
  }
  const prefix = `${ALGORITHM_IDENTIFIER} `;
  if (!authorization.startsWith(prefix)) {
    throw new SignatureRefusedError(400, "InvalidArgument", `Only ${ALGORITHM_IDENTIFIER} is accepted.`);
  }
  const fields = new Map<string, string>();
  for (const part of authorization.slice(prefix.length).split(",")) {
    const at = part.indexOf("=");
    if (at > 0) fields.set(part.slice(0, at).trim(), part.slice(at + 1).trim());
  }
  const longDate = headers["x-amz-date"];
  return claim(
    fields.get("Credential"),
    fields.get("SignedHeaders"),
    fields.get("Signature"),
    typeof longDate === "string" ? longDate : undefined,
  );
}

function claimFromQuery(query: QueryParameterBag): ClaimedSignature {
  const one = (name: string) => {
    const value = query[name];
    return typeof value === "string" ? value : undefined;
  };
  if (one("X-Amz-Algorithm") !== ALGORITHM_IDENTIFIER) {
    throw new SignatureRefusedError(400, "InvalidArgument", `Only ${ALGORITHM_IDENTIFIER} is accepted.`);
  }
  const expires = Number(one("X-Amz-Expires"));
  if (!Number.isInteger(expires) || expires < 1 || expires > MAX_EXPIRES_S) {
    throw new SignatureRefusedError(400, "AuthorizationQueryParametersError", "X-Amz-Expires is invalid.");
  }
  return {
    ...claim(one("X-Amz-Credential"), one("X-Amz-SignedHeaders"), one("X-Amz-Signature"), one("X-Amz-Date")),
    expires,
  };
}

function claim(
  credential: string | undefined,
  signedHeaders: string | undefined,
  signature: string | undefined,
  longDate: string | undefined,
): ClaimedSignature {
  const scope = credential?.split("/") ?? [];
  const [accessKeyId, shortDate, region, service, terminator] = scope;
  if (
    scope.length !== 5 ||
    accessKeyId === undefined ||
    shortDate === undefined ||
    region === undefined ||
    service === undefined ||
    terminator !== "aws4_request" ||
    signedHeaders === undefined ||
    signature === undefined ||
    longDate === undefined ||
    !/^\d{8}T\d{6}Z$/.test(longDate) ||
    !SERVICES.has(service)
  ) {
    throw new SignatureRefusedError(400, "AuthorizationHeaderMalformed", "The authorization is malformed.");
  }
  return {
    accessKeyId,
    shortDate,
    region,
    service,
    signedHeaders: signedHeaders.split(";").map((name) => name.toLowerCase()),
    signature,
    longDate,
  };
}

function assertFresh(claim: ClaimedSignature): void {
  const signedAt = parseLongDate(claim.longDate).getTime();
  const now = Date.now();
  if (claim.expires !== undefined) {
    if (now > signedAt + claim.expires * 1000 || signedAt > now + MAX_SKEW_MS) {
      throw new SignatureRefusedError(403, "AccessDenied", "Request has expired.");
    }
  } else if (Math.abs(now - signedAt) > MAX_SKEW_MS) {
    throw new SignatureRefusedError(
      403,
      "RequestTimeTooSkewed",
      "The difference between the request time and the current time is too large.",
    );
  }
}

function parseLongDate(longDate: string): Date {
  const [, y, mo, d, h, mi, s] = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(longDate) ?? [];
  return new Date(Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s)));
}

/** The query as the signer wants it: decoded, a repeated key as an array, a bare key as "". */
function parseQuery(search: string): QueryParameterBag {
  const query: QueryParameterBag = {};
  for (const pair of search.replace(/^\?/, "").split("&")) {
    if (pair === "") continue;
    const at = pair.indexOf("=");
    const key = safeDecode(at < 0 ? pair : pair.slice(0, at));
    const value = at < 0 ? "" : safeDecode(pair.slice(at + 1));
    const existing = query[key];
    if (existing === undefined || existing === null) query[key] = value;
    else query[key] = [...(Array.isArray(existing) ? existing : [existing]), value];
  }
  return query;
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new SignatureRefusedError(400, "InvalidURI", "Couldn't parse the specified URI.");
  }
}

function sameHex(expected: string, received: string): boolean {
  const a = Buffer.from(expected, "utf8");
  const b = Buffer.from(received.toLowerCase(), "utf8");
  return a.length === b.length && timingSafeEqual(a, b);
}

async function hashHex(body: Buffer): Promise<string> {
  const hash = new Hash("sha256");
  hash.update(body);
  return Buffer.from(await hash.digest()).toString("hex");
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_HASHED_BODY_BYTES) {
      throw new SignatureRefusedError(413, "EntityTooLarge", "The request body is too large to hash.");
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function forward(
  req: IncomingMessage,
  res: ServerResponse,
  body: Buffer | undefined,
  upstreamPort: number,
  agent: Agent,
): void {
  proxyRequest(
    req,
    res,
    { host: "127.0.0.1", port: upstreamPort, agent, dropHeaders: HOP_HEADERS },
    body,
    (unanswered) => sendError(unanswered, 502, "InternalError", "The S3/SQS emulator did not answer."),
  );
}

function refuse(req: IncomingMessage, res: ServerResponse, error: unknown): void {
  const refusal =
    error instanceof SignatureRefusedError
      ? error
      : new SignatureRefusedError(500, "InternalError", "The signature could not be checked.");
  // The body was not read: close the connection instead of reading what may be a large upload.
  res.setHeader("connection", "close");
  sendError(res, refusal.status, refusal.code, refusal.message, req.url);
  req.resume();
}

function sendError(res: ServerResponse, status: number, code: string, message: string, resource = ""): void {
  const body =
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<Error><Code>${code}</Code><Message>${escapeXml(message)}</Message>` +
    `<Resource>${escapeXml(resource)}</Resource><RequestId>${randomUUID()}</RequestId></Error>`;
  res.writeHead(status, {
    "content-type": "application/xml",
    "content-length": Buffer.byteLength(body),
  });
  res.end(body);
}

function escapeXml(text: string): string {
  return text.replace(
    /[<>&"']/g,
    (char) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" })[char] ?? char,
  );
}
