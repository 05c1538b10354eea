/**
 * `maas`: publish models and manage them, locally (the stack `npm start` runs) or in AWS.
 *   maas publish <file> --name N [--version V] [--manifest F] [--wait [--wait-timeout S]]
 *   maas models | versions <name> [--json] | alias <name> <alias> <version> | rollback <name> [alias]
 *   maas variant <name> <version> <kind>
 *   maas invoke <name> [--version V] --input JSON|@file | --text "..." | --image FILE...
 *   maas invoke <name> [--version V] --async --input @file|JSON [--header-length N] [--output F]
 *   maas capture <name> [--version V] [--since D] [--limit N] [--follow] | --version V --set P | --off
 * `invoke --async` uploads the file (presigned PUT, or parts past 8 MiB), submits a job with
 * `Prefer: respond-async`, polls GET /v2/jobs/<id> and downloads the result: stdout carries only the result.
 * Locally every default comes from <data dir>/stack.json, written by `npm start`. In AWS: --bucket,
 * --api (the stack's API URL), --api-key for invoke, and the standard AWS profile and region.
 */
import { once } from "node:events";
import { constants } from "node:fs";
import { access, type FileHandle, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import {
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { defaultProvider } from "@aws-sdk/credential-provider-node";
import { Upload } from "@aws-sdk/lib-storage";
import { Hash } from "@smithy/hash-node";
import { SignatureV4 } from "@smithy/signature-v4";
import type { HttpRequest } from "@smithy/types";
import * as z from "zod";
import { retryPolicy } from "#aws/http/retry.ts";
import { CAPTURE_PREFIX, captureHourPrefix } from "#core/capture/payload-capture.ts";
import { type CaptureSettings, MODEL_NAME_PATTERN, VERSION_PATTERN } from "#core/model.ts";
import { manifestKey, modelKey, parseManifest } from "#core/registry/manifest.ts";
import { bytesElements } from "#core/v2/binary-data.ts";
import { DEFAULT_DATA_DIR, type LocalStackInfo, readStackFile } from "../local/stack-file.ts";

class UsageError extends Error {}

const HELP: Record<string, string> = {
  main: `maas: publish and manage ONNX models on serverless-maas

Commands:
  publish <file> --name N     upload a model; registration starts on its own
  models                      list models and their versions
  versions <name>             list a model's versions: status, target, variant served, aliases, warnings
  variant <name> <ver> <kind> serve a version's variant (int8-dynamic, ...); 'original' goes back
  alias <name> <alias> <ver>  point an alias at a version (promote)
  rollback <name> [alias]     move an alias back to its previous version (default: default)
  invoke <name> --input JSON  run an inference request
  capture <name> --since 1h   print a model's captured requests and responses (JSON Lines); --follow
                              tails them; --set PERCENT / --off switch a version's capture

Every command takes --help. Locally the stack started by \`npm start\` is found through
<data dir>/stack.json (MAAS_DATA_DIR, default .maas); in AWS pass --bucket and --api.`,
  publish: `maas publish <file> --name <name> [options]

Uploads <file> to models/<name>/<version>/model.onnx; the upload registers the version.
  --name N          model name: lower-case letters, digits, '-', '_', '.' (at most 64)
  --version V       version number (default: one more than the highest uploaded)
  --manifest F      maas.json to upload first (description, labels, tags, target, samples)
  --wait            wait until the version is ready and optimized, or failed (exit 1), printing each
                    phase on stderr (registering, optimizing, ready)
  --wait-timeout S  give up waiting after S seconds (default 600; exit 1)
  --bucket B        the model bucket in AWS (default: the local stack's)
  --api URL         the API's base URL, for --wait (default: the local stack's)
  --region R, --profile P   AWS region and profile (default: the standard AWS configuration)`,
  models: `maas models [--api URL]\n\nLists models with their versions (admin API).`,
  versions: `maas versions <name> [--json] [--api URL]

Lists a model's versions as a table: version, status, target, the variant serving (with who chose it
when a person did), aliases, warnings (the first one, and how many). --json prints the admin records.`,
  variant: `maas variant <name> <version> <kind> [--json] [--api URL]

Makes <version> serve its variant <kind> (one the optimizer built: see \`maas versions --json\`);
'original' goes back to the upload. Inference picks the choice up within the registry cache's TTL
(MAAS_REGISTRY_TTL_MS: 5 s in AWS, 1 s locally). --json prints the version's admin record.`,
  alias: `maas alias <name> <alias> <version> [--api URL]\n\nPoints <alias> at <version>; the unversioned routes serve the alias 'default'.`,
  rollback: `maas rollback <name> [alias] [--api URL]\n\nMoves the alias (default: 'default') back to the version it pointed at before.`,
  invoke: `maas invoke <name> --input JSON|@file [--version V] [--api URL] [--api-key K]
maas invoke <name> --text "some text" [--text "another"] [--top-k K] [--json] [options]
maas invoke <name> --image FILE [--image FILE | FILE...] [--top-k K] [--json] [options]
maas invoke <name> --async --input @file|JSON [--header-length N] [--output FILE] [options]

Sends a V2 infer request: --input is the request body, or only its "inputs" array. --text sends texts
to a text task model (published with "task" in its manifest), --image JPEG, PNG or WebP files to an
image-classification model (raw, through the binary data extension): a classifier's labels and scores
are printed one line per text or file, best first (--top-k K labels each); embeddings, or --json, print
the answer.
  --version V        a version number or an alias (default: the alias 'default')
  --async            run the request as a job (Prefer: respond-async), for inputs past the synchronous
                     limits (6 MB) or inferences past 29 s: an @file is uploaded first (one PUT up to
                     8 MiB, 8 MiB parts past that; progress on stderr), inline JSON is sent as is; then the
                     job is polled, its status changes shown on stderr, and its result fetched
  --header-length N  the file is a binary-extension body: a JSON header of N bytes, then the tensor data
                     (a file that is not JSON needs it)
  --output FILE      write the result to FILE as the service answered it (JSON, or binary-extension) and
                     print the job as JSON on stdout (with inference_header_content_length when binary).
                     Without it a JSON result is printed on stdout, and a binary one written to stdout
                     only when stdout is not a terminal
  --wait-timeout S   stop waiting after S seconds (default 3600; exit 1; the job goes on)
  --api URL, --api-key K   the API and its key (default: the local stack's)
Exit code: 0 when the inference succeeded, 1 when it failed (the error is printed), 2 on a usage error.`,
  capture: `maas capture <name> [--version V] [--since D] [--limit N] [--follow] [options]
maas capture <name> --version V --set PERCENT [--no-requests] [--no-responses] [--json] [options]
maas capture <name> --version V --off [--json] [options]

Prints a model's captured exchanges as JSON Lines on stdout, oldest first: one exchange a line, in
SageMaker Data Capture's format, as the inference function wrote them (a moment after each response)
to capture/<name>/<version>/<yyyy>/<mm>/<dd>/<hh>/ in the model bucket (hours in UTC).
  --version V       only this version (default: every version of the model with captures)
  --since D         from how long ago: a whole number and s, m, h or d (30m, 1h, 2d; default 1h;
                    at most 366d)
  --limit N         print only the last N exchanges of that window
  --follow          then print new exchanges as they are written (the bucket is polled every 2 s),
                    until Ctrl-C
  --set PERCENT     capture PERCENT (0 to 100) of the version's infer requests, sampled; inference
                    sees it within the registry cache's TTL. It overrides the manifest's "capture"
  --no-requests, --no-responses   with --set: leave that side of each exchange out
  --off             capture none of the version's exchanges any more (what was captured stays)
  --json            with --set or --off: print the version's admin record
  --bucket B        the model bucket in AWS (default: the local stack's)
  --api URL         the API, for --set and --off (default: the local stack's)
  --region R, --profile P   AWS region and profile (default: the standard AWS configuration)
A line that is not a capture line is reported on stderr and skipped. No captures in the window: nothing
on stdout, a note on stderr, exit code 0. Exit code 1 on an error, 2 on a usage error.`,
};

/** Where a command sends its work: the API and the model bucket, and the AWS region and profile. */
const TARGET_OPTIONS = {
  api: { type: "string" },
  bucket: { type: "string" },
  region: { type: "string" },
  profile: { type: "string" },
} as const;

function localStack(): Promise<LocalStackInfo | undefined> {
  return readStackFile(process.env.MAAS_DATA_DIR ?? DEFAULT_DATA_DIR);
}

interface Target {
  readonly s3: S3Client;
  readonly bucket: string;
  readonly api: string | undefined;
  readonly local: LocalStackInfo | undefined;
  readonly region: string | undefined;
  readonly profile: string | undefined;
}

async function resolveTarget(values: Record<string, string | boolean | undefined>): Promise<Target> {
  const bucket = values.bucket as string | undefined;
  const profile = values.profile as string | undefined;
  const region = (values.region as string | undefined) ?? process.env.AWS_REGION;
  if (bucket !== undefined) {
    return {
      s3: new S3Client({ region, credentials: defaultProvider({ profile }) }),
      bucket,
      api: values.api as string | undefined,
      local: undefined,
      region,
      profile,
    };
  }
  const local = await localStack();
  if (local === undefined) {
    throw new UsageError("no local stack found: run `npm start` first, or pass --bucket (and --api) for AWS");
  }
  return {
    s3: new S3Client({
      region: "us-east-1",
      endpoint: local.s3Endpoint,
      forcePathStyle: true,
      credentials: local.s3Credentials,
    }),
    bucket: local.bucket,
    api: (values.api as string | undefined) ?? local.url,
    local,
    region,
    profile,
  };
}

/** Calls the API: the admin key locally, SigV4 (IAM) against a deployed stack, the API key for inference. */
async function call(
  target: Target,
  method: string,
  path: string,
  options: {
    body?: string | Uint8Array;
    apiKey?: string;
    headers?: Record<string, string>;
    timeoutMs?: number;
  } = {},
) {
  if (target.api === undefined) throw new UsageError("this command needs the API: pass --api <url>");
  const url = new URL(path.replace(/^\//, ""), target.api.endsWith("/") ? target.api : `${target.api}/`);
  const headers: Record<string, string> = {
    "content-type": "application/json",
    host: url.host,
    ...options.headers,
  };
  const admin = path.startsWith("/admin");
  if (options.apiKey !== undefined) headers["x-api-key"] = options.apiKey;
  else if (target.local !== undefined)
    headers["x-api-key"] = admin ? target.local.adminKey : target.local.apiKey;
  if (admin && target.local === undefined) {
    const signer = new SignatureV4({
      credentials: defaultProvider({ profile: target.profile }),
      region: target.region ?? url.hostname.split(".")[2] ?? "us-east-1",
      service: "execute-api",
      sha256: Hash.bind(null, "sha256"),
    });
    const request: HttpRequest = {
      method,
      protocol: url.protocol,
      hostname: url.hostname,
      path: url.pathname,
      query: {},
      headers,
      body: options.body,
    };
    const signed = await signer.sign(request);
    Object.assign(headers, signed.headers);
  }
  const response = await fetch(url, {
    method,
    headers,
    body: options.body,
    ...(options.timeoutMs === undefined ? {} : { signal: AbortSignal.timeout(options.timeoutMs) }),
  }).catch((error: unknown) => {
    throw networkError(error, `${method} ${url.origin}${url.pathname} failed (is the API at ${target.api}?)`);
  });
  const text = await response.text();
  return { status: response.status, json: parseJsonOrUndefined(text), text };
}

/** A response's JSON; undefined for an empty or non-JSON body (a proxy's HTML error page, say). */
function parseJsonOrUndefined(text: string): unknown {
  try {
    return text ? JSON.parse(text) : undefined;
  } catch {
    return undefined;
  }
}

function failure(response: { status: number; json: unknown; text: string }): Error {
  const body = response.json as { error?: string; message?: string } | undefined;
  return new Error(`HTTP ${response.status}: ${body?.error ?? body?.message ?? response.text}`);
}

async function nextVersion(target: Target, name: string): Promise<number> {
  let highest = 0;
  let token: string | undefined;
  do {
    const page = await target.s3.send(
      new ListObjectsV2Command({
        Bucket: target.bucket,
        Prefix: `models/${name}/`,
        ContinuationToken: token,
      }),
    );
    for (const object of page.Contents ?? []) {
      const version = Number((object.Key ?? "").split("/")[2]);
      if (Number.isInteger(version) && version > highest) highest = version;
    }
    token = page.NextContinuationToken;
  } while (token !== undefined);
  return highest + 1;
}

/**
 * Transfer progress on stderr: on a terminal a bar redrawn in place (at most every 100 ms) with the
 * bytes sent of the total and the rate; elsewhere only the final line, so that logs stay readable.
 */
function progress(total: number) {
  const started = Date.now();
  let drawn = 0;
  let finished = false;
  const draw = (loaded: number, final: boolean) => {
    const fraction = total === 0 ? 1 : Math.min(1, loaded / total);
    const bar = "#".repeat(Math.round(fraction * 30)).padEnd(30, ".");
    const rate = loaded / 1e6 / Math.max(0.001, (Date.now() - started) / 1000);
    const line = `[${bar}] ${(fraction * 100).toFixed(0).padStart(3)}%  ${byteCount(loaded, total)}${total < 1e6 ? "" : `  ${rate.toFixed(1)} MB/s`}`;
    process.stderr.write(process.stderr.isTTY ? `\r${line}${final ? "\n" : ""}` : `${line}\n`);
  };
  return {
    update(loaded: number) {
      if (finished || !process.stderr.isTTY || Date.now() - drawn < 100) return;
      drawn = Date.now();
      draw(loaded, false);
    },
    /** The final line: every byte is sent. */
    done() {
      if (finished) return;
      finished = true;
      draw(total, true);
    },
    /** Ends a bar left half drawn on a terminal, so that an error starts on its own line. */
    abandon() {
      if (!finished && drawn > 0) process.stderr.write("\n");
      finished = true;
    },
  };
}

/** `12.3 / 20.1 MB`, or kB when the total is under a megabyte. */
function byteCount(loaded: number, total: number): string {
  const [unit, scale] = total < 1e6 ? ["kB", 1e3] : ["MB", 1e6];
  return `${(loaded / scale).toFixed(1)} / ${(total / scale).toFixed(1)} ${unit}`;
}

async function publish(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      name: { type: "string" },
      version: { type: "string" },
      manifest: { type: "string" },
      wait: { type: "boolean" },
      ...TARGET_OPTIONS,
      "wait-timeout": { type: "string" },
    },
  });
  const file = positionals[0];
  if (file === undefined) throw new UsageError("publish needs a model file");
  const name =
    values.name ??
    basename(file)
      .replace(/\.onnx$/, "")
      .toLowerCase();
  if (!MODEL_NAME_PATTERN.test(name)) {
    throw new UsageError(
      `'${name}' is not a valid model name: lower-case letters, digits, '-', '_', '.' (at most 64)`,
    );
  }
  const timeoutSeconds = Number(values["wait-timeout"] ?? 600);
  if (!Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0)
    throw new UsageError("--wait-timeout must be a positive number of seconds");
  const target = await resolveTarget(values);
  const version = values.version === undefined ? await nextVersion(target, name) : Number(values.version);
  if (!Number.isInteger(version) || version < 1) throw new UsageError(`--version must be a positive integer`);

  const key = modelKey(name, version);
  const exists = await target.s3.send(new HeadObjectCommand({ Bucket: target.bucket, Key: key })).then(
    () => true,
    () => false,
  );
  if (exists) throw new UsageError(`${name} version ${version} was already uploaded; versions are immutable`);

  if (values.manifest !== undefined) {
    const text = await readFile(values.manifest, "utf8");
    parseManifest(text); // refuse a bad manifest here rather than after the upload
    await target.s3.send(
      new PutObjectCommand({
        Bucket: target.bucket,
        Key: manifestKey(name, version),
        Body: text,
        ContentType: "application/json",
      }),
    );
  }
  const bytes = await readFile(file);
  const bar = progress(bytes.byteLength);
  const upload = new Upload({
    client: target.s3,
    params: { Bucket: target.bucket, Key: key, Body: bytes },
    partSize: 8 * 1024 * 1024,
    queueSize: 4,
  });
  upload.on("httpUploadProgress", (event) => bar.update(event.loaded ?? 0));
  await upload.done().catch((error: unknown) => {
    bar.abandon();
    throw error;
  });
  bar.done();
  console.log(`uploaded s3://${target.bucket}/${key} (${bytes.byteLength} bytes)`);
  if (!values.wait) return 0;
  return waitForSettled(target, name, version, timeoutSeconds);
}

/** The admin record of a version, as the CLI reads it. */
interface VersionRecord {
  readonly version: number;
  readonly status: string;
  readonly reason?: string;
  readonly target?: string;
  readonly sha256?: string;
  readonly serving?: string;
  readonly variants?: readonly {
    readonly kind: string;
    readonly parity?: { readonly passed: boolean; readonly reason?: string };
  }[];
  readonly variantChoice?: { readonly kind: string; readonly by: string; readonly at: string };
  readonly aliases?: readonly string[];
  readonly warnings?: readonly string[];
  readonly optimizedAt?: string;
  readonly optimizeError?: string;
  readonly capture?: CaptureSettings;
}

/**
 * Where a version is on its way to serving. A `ready` version whose optimization has not settled is
 * still optimizing (its message is queued): registration hands every version to the optimizer.
 */
function phaseOf(record: VersionRecord | undefined): string {
  if (record === undefined || record.status === "registering") return "registering";
  if (record.status === "ready" && record.optimizedAt === undefined && record.optimizeError === undefined)
    return "optimizing";
  return record.status;
}

/** Polls the admin record until the version is ready with optimization settled, or failed. */
async function waitForSettled(target: Target, name: string, version: number, timeoutSeconds: number) {
  const deadline = Date.now() + timeoutSeconds * 1000;
  let shown: string | undefined;
  for (;;) {
    const response = await call(target, "GET", `/admin/models/${name}/versions/${version}`);
    if (response.status !== 200 && response.status !== 404) throw failure(response);
    const record = response.status === 200 ? (response.json as VersionRecord) : undefined;
    const phase = phaseOf(record);
    if (phase !== shown) {
      console.error(`${name} version ${version}: ${phase}`);
      shown = phase;
    }
    if (record?.status === "failed") {
      console.error(`${name} version ${version} failed: ${record.reason ?? "no reason recorded"}`);
      return 1;
    }
    if (record !== undefined && phase === "ready") {
      for (const warning of record.warnings ?? []) console.error(`warning: ${warning}`);
      if (record.optimizeError !== undefined)
        console.error(`optimization failed, serving the original: ${record.optimizeError}`);
      console.log(
        `${name} version ${version} is ready on ${record.target}, serving ${describeServing(record)} (sha256 ${record.sha256})`,
      );
      return 0;
    }
    if (Date.now() > deadline) {
      console.error(`${name} version ${version} is still ${phase} after ${timeoutSeconds} s`);
      return 1;
    }
    await new Promise((wake) => setTimeout(wake, 250));
  }
}

/** The variant serving, and who chose it when a person did: `int8-dynamic (operator)`. */
function describeServing(record: VersionRecord): string {
  const serving = record.serving ?? "-";
  const choice = record.variantChoice;
  return choice !== undefined && choice.kind === serving ? `${serving} (${choice.by})` : serving;
}

const WARNING_CHARS = 60;

function describeWarnings(warnings: readonly string[] | undefined): string {
  const [first] = warnings ?? [];
  if (first === undefined) return "-";
  const text = first.length > WARNING_CHARS ? `${first.slice(0, WARNING_CHARS - 1)}…` : first;
  return warnings!.length === 1 ? text : `(${warnings!.length}) ${text}`;
}

/** Columns padded to their widest cell; the last one is left ragged. */
function formatTable(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  return rows
    .map((row) =>
      row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]!))).join("  "),
    )
    .join("\n");
}

function versionsTable(versions: readonly VersionRecord[]): string {
  return formatTable([
    ["VERSION", "STATUS", "TARGET", "VARIANT", "ALIASES", "WARNINGS"],
    ...versions.map((record) => [
      String(record.version),
      record.status,
      record.target ?? "-",
      describeServing(record),
      record.aliases?.length ? record.aliases.join(",") : "-",
      describeWarnings(record.warnings),
    ]),
  ]);
}

async function admin(command: string, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { ...TARGET_OPTIONS, json: { type: "boolean" } },
  });
  const target = await resolveTarget(values);
  const [name, second, third] = positionals;
  const need = (value: string | undefined, what: string) => {
    if (value === undefined) throw new UsageError(`${command} needs ${what}`);
    return value;
  };
  let response: Awaited<ReturnType<typeof call>>;
  switch (command) {
    case "models":
      response = await call(target, "GET", "/admin/models");
      break;
    case "versions": {
      response = await call(target, "GET", `/admin/models/${need(name, "a model name")}/versions`);
      if (response.status >= 300) throw failure(response);
      const { versions } = response.json as { versions: VersionRecord[] };
      console.log(values.json ? JSON.stringify(versions, null, 2) : versionsTable(versions));
      return 0;
    }
    case "variant": {
      const version = need(second, "a version");
      if (!VERSION_PATTERN.test(version)) throw new UsageError(`'${version}' is not a version number`);
      const kind = need(third, "a variant kind (or 'original')");
      response = await call(
        target,
        "PUT",
        `/admin/models/${need(name, "a model name")}/versions/${version}/variant`,
        { body: JSON.stringify({ kind }) },
      );
      if (response.status >= 300) throw failure(response);
      const record = response.json as VersionRecord;
      if (values.json) console.log(JSON.stringify(record, null, 2));
      else
        console.log(
          `${name} version ${version} now serves ${describeServing(record)}; inference sees it within the registry cache's TTL`,
        );
      return 0;
    }
    case "alias": {
      const version = Number(need(third, "a version"));
      response = await call(
        target,
        "PUT",
        `/admin/models/${need(name, "a model name")}/aliases/${need(second, "an alias")}`,
        {
          body: JSON.stringify({ version }),
        },
      );
      break;
    }
    default:
      response = await call(
        target,
        "POST",
        `/admin/models/${need(name, "a model name")}/aliases/${second ?? "default"}/rollback`,
      );
  }
  if (response.status >= 300) throw failure(response);
  console.log(JSON.stringify(response.json, null, 2));
  return 0;
}

/** Bodies up to this size go up in one PUT, larger ones in parts this size (the local S3 emulator refuses a request past about 11 MiB). */
const PART_BYTES = 8 * 1024 * 1024;
/** S3's most parts in one multipart upload. */
const MAX_PARTS = 10_000;
const PARALLEL_PARTS = 4;
/** A part's PUT is tried 3 times, with the AWS clients' full-jitter backoff (1 s base, 4 s cap). */
const PUT_RETRY = retryPolicy({ maxAttempts: 3 }, { baseMs: 1_000, capMs: 4_000 });
/** What one read of the input file takes: the most of it in memory per part in flight. */
const READ_CHUNK_BYTES = 256 * 1024;
/** A JSON file up to this size is parsed before it is uploaded, to refuse a malformed one here. */
const PARSE_LIMIT_BYTES = 8 * 1024 * 1024;
const API_TIMEOUT_MS = 60_000;
const TRANSFER_TIMEOUT_MS = 15 * 60_000;
const POLL_FIRST_MS = 250;
const POLL_MAX_MS = 5_000;
/** Polls in a row that may fail (network, 5xx) before waiting gives up. */
const POLL_FAILURES = 5;

const uploadTicketSchema = z.object({
  input_uri: z.string(),
  expires_in: z.number(),
  url: z.string().optional(),
  part_urls: z.array(z.string()).optional(),
  complete_url: z.string().optional(),
});

const submittedJobSchema = z.object({ id: z.string().regex(/^[A-Za-z0-9_-]+$/), status: z.string() });

/** The fields of `GET /v2/jobs/<id>` (lambdas/core/jobs/async-inference.ts JobView) that the CLI reads. */
const jobViewSchema = z.object({
  id: z.string(),
  model_name: z.string(),
  model_version: z.string(),
  status: z.string(),
  error: z.string().optional(),
  output_url: z.string().optional(),
  output_content_type: z.string().optional(),
  inference_header_content_length: z.number().int().positive().optional(),
  expires_in: z.number().optional(),
});
type JobView = z.infer<typeof jobViewSchema>;

/** The parts of a V2 request that ask for binary outputs. */
const binaryOutputsRequestSchema = z.object({
  parameters: z.object({ binary_data_output: z.unknown() }).partial().nullish(),
  outputs: z
    .array(z.object({ parameters: z.object({ binary_data: z.unknown() }).partial().nullish() }))
    .nullish(),
});

function asksBinaryOutputs(request: unknown): boolean {
  const parsed = binaryOutputsRequestSchema.safeParse(request);
  if (!parsed.success) return false;
  const { parameters, outputs } = parsed.data;
  return (
    parameters?.binary_data_output === true ||
    (outputs ?? []).some((output) => output.parameters?.binary_data === true)
  );
}

/** A body parsed from an API answer, or an error that says which answer was not as expected. */
function expectBody<T>(schema: z.ZodType<T>, response: { json: unknown; text: string }, what: string): T {
  const parsed = schema.safeParse(response.json);
  if (parsed.success) return parsed.data;
  throw new Error(
    `${what} answered what this CLI does not expect (${response.text.slice(0, 200)}); is --api right?`,
  );
}

/** A request body read in ranges: an upload holds at most a few chunks of it per part in flight. */
interface BodySource {
  readonly size: number;
  read(position: number, length: number): Promise<Uint8Array>;
}

function bufferSource(bytes: Uint8Array): BodySource {
  return {
    size: bytes.byteLength,
    read: async (position, length) => bytes.subarray(position, position + length),
  };
}

function fileSource(file: string, handle: FileHandle, size: number): BodySource {
  return {
    size,
    async read(position, length) {
      const { bytesRead, buffer } = await handle.read(Buffer.allocUnsafe(length), 0, length, position);
      if (bytesRead === 0)
        throw new Error(`${file} got shorter while it was read; leave it alone during the upload`);
      return buffer.subarray(0, bytesRead);
    },
  };
}

/** Bytes [start, end) of a body as a stream for fetch; `sent` hears of each chunk as fetch takes it. */
function rangeStream(source: BodySource, start: number, end: number, sent: (bytes: number) => void) {
  let position = start;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (position >= end) {
        controller.close();
        return;
      }
      const chunk = await source.read(position, Math.min(READ_CHUNK_BYTES, end - position));
      position += chunk.byteLength;
      sent(chunk.byteLength);
      controller.enqueue(chunk);
    },
  });
}

const isJsonSpace = (byte: number) => byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;

/**
 * What a body is, from where its first JSON value ends: JSON when only whitespace follows it; otherwise
 * a binary-extension body, whose JSON header seems to be `headerEnd` bytes (undefined when the body does
 * not start with a JSON object or array). Streams the file: the upload reads it once more.
 */
async function sniffBody(
  source: BodySource,
): Promise<{ json: true; array: boolean } | { json: false; headerEnd?: number }> {
  let opener: number | undefined;
  let depth = 0;
  let inString = false;
  let escaped = false;
  let end: number | undefined;
  for (let position = 0; position < source.size; ) {
    const chunk = await source.read(position, Math.min(1024 * 1024, source.size - position));
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i] as number;
      if (end !== undefined) {
        if (!isJsonSpace(byte)) return { json: false, headerEnd: end };
      } else if (opener === undefined) {
        if (isJsonSpace(byte)) continue;
        if (byte !== 0x7b && byte !== 0x5b) return { json: false };
        opener = byte;
        depth = 1;
      } else if (inString) {
        if (escaped) escaped = false;
        else if (byte === 0x5c) escaped = true;
        else if (byte === 0x22) inString = false;
      } else if (byte === 0x22) inString = true;
      else if (byte === 0x7b || byte === 0x5b) depth++;
      else if ((byte === 0x7d || byte === 0x5d) && --depth === 0) end = position + i + 1;
    }
    position += chunk.length;
  }
  return end === undefined ? { json: false } : { json: true, array: opener === 0x5b };
}

/** What `invoke --async --input @file` uploads, and what its request says of itself. */
interface FileInput {
  readonly source: BodySource;
  readonly headerLength: number | undefined;
  /** Whether the request asks for binary outputs; undefined when the file was too large to parse here. */
  readonly binaryOutputs: boolean | undefined;
}

async function prepareFileInput(
  file: string,
  handle: FileHandle,
  headerLength: number | undefined,
): Promise<FileInput> {
  const { size } = await handle.stat();
  if (size === 0) throw new UsageError(`${file} is empty; --input @file takes a V2 request body`);
  const source = fileSource(file, handle, size);
  if (headerLength !== undefined) {
    if (headerLength > size)
      throw new UsageError(
        `--header-length ${headerLength} is past the end of ${file} (${size} bytes); it is the length of the body's JSON header`,
      );
    const header = parseJsonOrUndefined(Buffer.from(await source.read(0, headerLength)).toString("utf8"));
    if (typeof header !== "object" || header === null || Array.isArray(header)) {
      const sniffed = await sniffBody(source);
      const hint =
        !sniffed.json && sniffed.headerEnd !== undefined ? ` (it seems to be ${sniffed.headerEnd})` : "";
      throw new UsageError(
        `the first ${headerLength} bytes of ${file} are not a JSON object; --header-length must be the length of the body's JSON header in bytes${hint}`,
      );
    }
    return { source, headerLength, binaryOutputs: asksBinaryOutputs(header) };
  }
  const sniffed = await sniffBody(source);
  if (!sniffed.json) {
    const hint =
      sniffed.headerEnd === undefined
        ? ""
        : ` (its JSON header seems to end at byte ${sniffed.headerEnd}: --header-length ${sniffed.headerEnd})`;
    throw new UsageError(
      `${file} is not JSON; a binary-extension body (a JSON header, then the tensor data) needs --header-length N, the header's length in bytes${hint}`,
    );
  }
  if (sniffed.array) {
    // Only the "inputs" array, as sync invoke takes it: wrapped in memory, as sync invoke would send it.
    const inputs = await readFile(file);
    return {
      source: bufferSource(Buffer.concat([Buffer.from('{"inputs":'), inputs, Buffer.from("}")])),
      headerLength: undefined,
      binaryOutputs: false,
    };
  }
  if (size > PARSE_LIMIT_BYTES) return { source, headerLength: undefined, binaryOutputs: undefined };
  let request: unknown;
  try {
    request = JSON.parse(await readFile(file, "utf8"));
  } catch (error) {
    throw new UsageError(
      `${file} is not valid JSON (${(error as Error).message}); fix it, or pass --header-length N if it is a binary-extension body`,
    );
  }
  return { source, headerLength: undefined, binaryOutputs: asksBinaryOutputs(request) };
}

/** `fetch failed` says nothing: the cause (ECONNREFUSED, a reset) does. */
function networkError(error: unknown, what: string): Error {
  const cause = (error as { cause?: { message?: string } }).cause?.message;
  return new Error(`${what}: ${(error as Error).message}${cause ? ` (${cause})` : ""}`);
}

/** S3's XML error as `: Code: Message`, or the start of whatever else came. */
function storeReason(text: string): string {
  const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1];
  const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1];
  if (code !== undefined) return `: ${code}${message ? `: ${message}` : ""}`;
  return text.trim() ? `: ${text.trim().slice(0, 200)}` : "";
}

/** One PUT of bytes [start, end) to a presigned URL: its ETag, or why it may be tried again. */
async function putOnce(
  url: string,
  source: BodySource,
  range: { start: number; end: number },
  sent: (bytes: number) => void,
  what: string,
  signal: AbortSignal,
): Promise<{ etag: string } | { retryable: string }> {
  let response: Response;
  try {
    response = await fetch(url, {
      method: "PUT",
      headers: { "content-length": String(range.end - range.start) },
      body: rangeStream(source, range.start, range.end, sent),
      duplex: "half",
      signal: AbortSignal.any([signal, AbortSignal.timeout(TRANSFER_TIMEOUT_MS)]),
    });
  } catch (error) {
    if (signal.aborted) throw error;
    return { retryable: networkError(error, `${what} failed`).message };
  }
  const text = await response.text().catch(() => "");
  if (response.ok) return { etag: response.headers.get("etag") ?? "" };
  const reason = `${what} was refused: HTTP ${response.status}${storeReason(text)}`;
  if (response.status < 500) throw new Error(reason);
  return { retryable: reason };
}

/** PUTs bytes [start, end) to a presigned URL, again after a network error or a 5xx; answers the ETag. */
async function putRange(
  url: string,
  source: BodySource,
  range: { start: number; end: number },
  meter: (bytes: number) => void,
  what: string,
  signal: AbortSignal,
): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    let counted = 0;
    const sent = (bytes: number) => {
      counted += bytes;
      meter(bytes);
    };
    const outcome = await putOnce(url, source, range, sent, what, signal);
    if ("etag" in outcome) return outcome.etag;
    meter(-counted);
    if (attempt >= PUT_RETRY.maxAttempts)
      throw new Error(`${outcome.retryable} (${attempt} tries); run the command again`);
    await PUT_RETRY.sleep(PUT_RETRY.delayMs(attempt));
  }
}

/**
 * Uploads a body through `POST /v2/uploads`: one presigned PUT up to PART_BYTES, parts of PART_BYTES
 * (more past 10 000 of them), PARALLEL_PARTS at a time, above. Answers the `input_uri` to submit.
 */
async function uploadBody(target: Target, source: BodySource, apiKey: string | undefined): Promise<string> {
  const partBytes = Math.max(PART_BYTES, Math.ceil(source.size / MAX_PARTS));
  const parts = source.size <= PART_BYTES ? undefined : Math.ceil(source.size / partBytes);
  const response = await call(target, "POST", "/v2/uploads", {
    body: parts === undefined ? "" : JSON.stringify({ parts }),
    apiKey,
    timeoutMs: API_TIMEOUT_MS,
  });
  if (response.status !== 200) throw failure(response);
  const ticket = expectBody(uploadTicketSchema, response, "POST /v2/uploads");
  const bar = progress(source.size);
  let sent = 0;
  const meter = (bytes: number) => {
    sent += bytes;
    bar.update(sent);
  };
  const stop = new AbortController();
  try {
    if (parts === undefined) {
      if (ticket.url === undefined) throw new Error("POST /v2/uploads answered no url for a single PUT");
      await putRange(ticket.url, source, { start: 0, end: source.size }, meter, "the upload", stop.signal);
      bar.done();
      return ticket.input_uri;
    }
    const urls = ticket.part_urls ?? [];
    if (urls.length !== parts || ticket.complete_url === undefined)
      throw new Error(
        `POST /v2/uploads answered ${urls.length} part URLs for ${parts} parts, or no complete_url`,
      );
    const etags: string[] = [];
    let next = 0;
    let done = 0;
    let stored = 0;
    const uploadParts = async () => {
      while (next < parts && !stop.signal.aborted) {
        const index = next++;
        const start = index * partBytes;
        const range = { start, end: Math.min(source.size, start + partBytes) };
        const what = `part ${index + 1} of ${parts}`;
        etags[index] = await putRange(urls[index] as string, source, range, meter, what, stop.signal);
        if (!etags[index])
          throw new Error(`${what}: the store answered no ETag, which completing the upload needs`);
        done++;
        stored += range.end - range.start;
        if (!process.stderr.isTTY)
          console.error(
            `uploaded part ${index + 1}/${parts} (${done} of ${parts} done, ${byteCount(stored, source.size)})`,
          );
      }
    };
    await Promise.all(
      Array.from({ length: Math.min(PARALLEL_PARTS, parts) }, () =>
        uploadParts().catch((error: unknown) => {
          stop.abort();
          throw error;
        }),
      ),
    );
    const completeXml = `<CompleteMultipartUpload>${etags
      .map((etag, i) => `<Part><PartNumber>${i + 1}</PartNumber><ETag>${etag}</ETag></Part>`)
      .join("")}</CompleteMultipartUpload>`;
    const completed = await fetch(ticket.complete_url, {
      method: "POST",
      body: completeXml,
      signal: AbortSignal.timeout(TRANSFER_TIMEOUT_MS),
    }).catch((error: unknown) => {
      throw networkError(error, "completing the upload failed");
    });
    const text = await completed.text();
    // S3 may answer 200 with an <Error> body when completion fails after it started.
    if (!completed.ok || text.includes("<Error>"))
      throw new Error(`completing the upload was refused: HTTP ${completed.status}${storeReason(text)}`);
    bar.done();
    return ticket.input_uri;
  } catch (error) {
    stop.abort();
    bar.abandon();
    throw error;
  }
}

/** Polls the job, with a growing interval up to POLL_MAX_MS, until it ends; status changes on stderr. */
async function waitForJob(
  target: Target,
  id: string,
  apiKey: string | undefined,
  timeoutSeconds: number,
): Promise<JobView> {
  const deadline = Date.now() + timeoutSeconds * 1000;
  let interval = POLL_FIRST_MS;
  let shown: string | undefined;
  let failures = 0;
  for (;;) {
    const response = await call(target, "GET", `/v2/jobs/${id}`, { apiKey, timeoutMs: API_TIMEOUT_MS }).catch(
      (error: unknown) => error as Error,
    );
    if (response instanceof Error || response.status >= 500 || response.status === 429) {
      if (++failures >= POLL_FAILURES) throw response instanceof Error ? response : failure(response);
    } else {
      if (response.status !== 200) throw failure(response);
      failures = 0;
      const job = expectBody(jobViewSchema, response, `GET /v2/jobs/${id}`);
      if (job.status !== shown) {
        console.error(
          shown === undefined
            ? `job ${id} (${job.model_name} version ${job.model_version}): ${job.status}`
            : `job ${id}: ${job.status}`,
        );
        shown = job.status;
      }
      if (job.status === "succeeded" || job.status === "failed") return job;
    }
    if (Date.now() + interval > deadline)
      throw new Error(
        `job ${id} is still ${shown ?? "not answering"} after ${timeoutSeconds} s; it goes on: GET /v2/jobs/${id} shows it (or give --wait-timeout more)`,
      );
    await new Promise((wake) => setTimeout(wake, interval));
    interval = Math.min(POLL_MAX_MS, Math.round(interval * 1.5));
  }
}

/**
 * Delivers an ended job: its error (exit 1), or its result to `output`, or to stdout (pretty JSON, or
 * binary only when stdout is not a terminal: exit 2 with the URL to fetch it otherwise).
 */
async function deliverJob(job: JobView, output: string | undefined): Promise<number> {
  if (job.status === "failed") {
    console.error(`maas invoke: job ${job.id} failed: ${job.error ?? "no reason recorded"}`);
    return 1;
  }
  if (job.output_url === undefined)
    throw new Error(`job ${job.id} is ${job.status} without an output_url; GET /v2/jobs/${job.id} again`);
  const headerLength = job.inference_header_content_length;
  const binary = `a binary-extension body: a JSON header of ${headerLength} bytes, then the tensor data`;
  if (output === undefined && headerLength !== undefined && process.stdout.isTTY) {
    console.error(
      `maas invoke: job ${job.id}'s result is ${binary}, and stdout is a terminal: pass --output FILE or redirect stdout; or fetch it within ${job.expires_in ?? "the"} s: curl -o result.bin '${job.output_url}'`,
    );
    return 2;
  }
  const response = await fetch(job.output_url, { signal: AbortSignal.timeout(TRANSFER_TIMEOUT_MS) }).catch(
    (error: unknown) => {
      throw networkError(error, `fetching job ${job.id}'s result failed`);
    },
  );
  if (!response.ok || response.body === null)
    throw new Error(
      `fetching job ${job.id}'s result was refused: HTTP ${response.status}${storeReason(await response.text())}`,
    );
  if (output !== undefined) {
    try {
      await writeFile(output, response.body);
    } catch (error) {
      await rm(output, { force: true });
      throw error;
    }
    const { size } = await stat(output);
    console.error(`wrote ${size} bytes to ${output}${headerLength === undefined ? "" : ` (${binary})`}`);
    console.log(
      JSON.stringify(
        {
          id: job.id,
          model_name: job.model_name,
          model_version: job.model_version,
          status: job.status,
          output,
          output_bytes: size,
          output_content_type: job.output_content_type,
          ...(headerLength === undefined ? {} : { inference_header_content_length: headerLength }),
        },
        null,
        2,
      ),
    );
    return 0;
  }
  if (headerLength !== undefined) {
    for await (const chunk of response.body) {
      if (!process.stdout.write(chunk)) await once(process.stdout, "drain");
    }
    console.error(`wrote job ${job.id}'s result to stdout: ${binary}`);
    return 0;
  }
  const text = await response.text();
  const json = parseJsonOrUndefined(text);
  console.log(json === undefined ? text : JSON.stringify(json, null, 2));
  return 0;
}

/** An inline `--input`: a V2 request body, or only its "inputs" array. */
function inlineBody(input: string): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(input);
  } catch (error) {
    throw new UsageError(
      `--input is not JSON (${(error as Error).message}); pass a V2 request body, its "inputs" array, or @file`,
    );
  }
  return JSON.stringify(Array.isArray(parsed) ? { inputs: parsed } : parsed);
}

/**
 * A task request's body: texts as JSON, or images raw through the binary data extension (a JSON header,
 * then each file as a BYTES element: its length in 4 little-endian bytes, then its bytes), which spares
 * them base64's third more bytes.
 */
function taskBody(
  texts: readonly string[],
  images: readonly Uint8Array[],
  topK: number | undefined,
): { body: string | Buffer; headers: Record<string, string> } {
  const parameters = topK === undefined ? {} : { parameters: { top_k: topK } };
  if (images.length === 0) {
    const inputs = [{ name: "text", datatype: "BYTES", shape: [texts.length], data: texts }];
    return { body: JSON.stringify({ inputs, ...parameters }), headers: {} };
  }
  const elements = bytesElements(images);
  const inputs = [
    {
      name: "image",
      datatype: "BYTES",
      shape: [images.length],
      parameters: { binary_data_size: elements.length },
    },
  ];
  const header = Buffer.from(JSON.stringify({ inputs, ...parameters }), "utf8");
  return {
    body: Buffer.concat([header, elements]),
    headers: {
      "content-type": "application/octet-stream",
      "inference-header-content-length": String(header.length),
    },
  };
}

/**
 * `maas invoke <m> --text "..." [--text "..."]` or `--image FILE [FILE...]`, `[--top-k K]`: a task's
 * labels and scores, one line per text or image, or embeddings.
 */
async function invokeTask(
  name: string,
  values: {
    text?: string[];
    image?: string[];
    "top-k"?: string;
    json?: boolean;
    version?: string;
    api?: string;
    "api-key"?: string;
    input?: string;
    async?: boolean;
  },
  moreImages: readonly string[],
): Promise<number> {
  if (!MODEL_NAME_PATTERN.test(name)) throw new UsageError(`'${name}' is not a model name`);
  if (values.text !== undefined && values.image !== undefined)
    throw new UsageError("--image and --text go separately: a task model takes one or the other");
  const option = values.image === undefined ? "--text" : "--image";
  if (values.input !== undefined || values.async)
    throw new UsageError(`${option} goes without --input and --async`);
  const texts = values.text ?? [];
  const files = values.image === undefined ? [] : [...values.image, ...moreImages];
  const images = await Promise.all(
    files.map((file) =>
      readFile(file).catch((error: NodeJS.ErrnoException) => {
        throw new UsageError(`cannot read --image ${file} (${error.code ?? error.message})`);
      }),
    ),
  );
  const topK = values["top-k"] === undefined ? undefined : Number(values["top-k"]);
  if (topK !== undefined && (!Number.isSafeInteger(topK) || topK < 1))
    throw new UsageError("--top-k must be a positive integer");
  const target = await resolveTarget({ api: values.api, bucket: values.api === undefined ? undefined : "-" });
  const path = `/v2/models/${name}${values.version ? `/versions/${encodeURIComponent(values.version)}` : ""}/infer`;
  const { body, headers } = taskBody(texts, images, topK);
  const response = await call(target, "POST", path, { body, headers, apiKey: values["api-key"] });
  if (response.status >= 300) throw failure(response);
  const outputs = (
    response.json as { outputs: { name: string; shape: number[]; data: (string | number)[] }[] }
  ).outputs;
  const label = outputs.find((output) => output.name === "label");
  const score = outputs.find((output) => output.name === "score");
  if (values.json || label === undefined || score === undefined) {
    console.log(JSON.stringify(response.json, null, 2));
    return 0;
  }
  // One line per text or image: its labels, best first, with their scores.
  const k = label.shape[1] ?? 1;
  for (const [row, subject] of (images.length === 0 ? texts : files).entries()) {
    const ranked = Array.from(
      { length: k },
      (_, i) => `${label.data[row * k + i]} ${Number(score.data[row * k + i]).toFixed(4)}`,
    );
    console.log(`${ranked.join(", ")}\t${subject}`);
  }
  return 0;
}

async function invoke(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      input: { type: "string" },
      text: { type: "string", multiple: true },
      image: { type: "string", multiple: true },
      "top-k": { type: "string" },
      json: { type: "boolean" },
      version: { type: "string" },
      api: { type: "string" },
      "api-key": { type: "string" },
      async: { type: "boolean" },
      "header-length": { type: "string" },
      output: { type: "string" },
      "wait-timeout": { type: "string" },
    },
  });
  const name = positionals[0];
  if (name !== undefined && (values.text !== undefined || values.image !== undefined))
    return invokeTask(name, values, positionals.slice(1));
  if (name === undefined || values.input === undefined)
    throw new UsageError(
      "invoke needs a model name and --input (or --text for a text model, --image for an image model)",
    );
  if (!MODEL_NAME_PATTERN.test(name)) throw new UsageError(`'${name}' is not a model name`);
  const file = values.input.startsWith("@") ? values.input.slice(1) : undefined;
  const asyncOnly = (["header-length", "output", "wait-timeout"] as const).filter((option) => values[option]);
  if (!values.async && asyncOnly.length > 0)
    throw new UsageError(`--${asyncOnly.join(", --")} go${asyncOnly.length === 1 ? "es" : ""} with --async`);
  const headerLength = values["header-length"] === undefined ? undefined : Number(values["header-length"]);
  if (headerLength !== undefined && (!Number.isSafeInteger(headerLength) || headerLength < 1))
    throw new UsageError(
      "--header-length must be a positive integer: the length of the body's JSON header in bytes",
    );
  if (headerLength !== undefined && file === undefined)
    throw new UsageError("--header-length describes an @file; inline --input is JSON");
  const timeoutSeconds = Number(values["wait-timeout"] ?? 3600);
  if (!Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0)
    throw new UsageError("--wait-timeout must be a positive number of seconds");
  // Refused before a long upload and job rather than after them.
  if (values.output !== undefined)
    await access(dirname(resolve(values.output)), constants.W_OK).catch(() => {
      throw new UsageError(
        `cannot write --output ${values.output}: its folder does not exist or is not writable`,
      );
    });
  const apiKey = values["api-key"];
  const target = await resolveTarget({ api: values.api, bucket: values.api === undefined ? undefined : "-" });
  const path = `/v2/models/${name}${values.version ? `/versions/${encodeURIComponent(values.version)}` : ""}/infer`;

  if (!values.async) {
    const body = inlineBody(file === undefined ? values.input : await readFile(file, "utf8"));
    const response = await call(target, "POST", path, { body, apiKey });
    if (response.status >= 300) throw failure(response);
    console.log(JSON.stringify(response.json, null, 2));
    return 0;
  }

  let body: string;
  if (file === undefined) {
    body = inlineBody(values.input);
  } else {
    const handle = await open(file).catch((error: NodeJS.ErrnoException) => {
      throw new UsageError(
        `cannot read ${file} (${error.code ?? error.message}); --input @file names the request body`,
      );
    });
    try {
      const input = await prepareFileInput(file, handle, headerLength);
      if (values.output === undefined && input.binaryOutputs === true && process.stdout.isTTY)
        throw new UsageError(
          `${file} asks for binary outputs, which a terminal cannot show: pass --output FILE or redirect stdout`,
        );
      const inputUri = await uploadBody(target, input.source, apiKey);
      body = JSON.stringify({
        input_uri: inputUri,
        ...(input.headerLength === undefined ? {} : { inference_header_content_length: input.headerLength }),
      });
    } finally {
      await handle.close();
    }
  }
  const submitted = await call(target, "POST", path, {
    body,
    apiKey,
    headers: { prefer: "respond-async" },
    timeoutMs: API_TIMEOUT_MS,
  });
  if (submitted.status !== 202) throw failure(submitted);
  const { id } = expectBody(submittedJobSchema, submitted, `POST ${path}`);
  console.error(`job ${id} submitted; GET /v2/jobs/${id} shows it`);
  return deliverJob(await waitForJob(target, id, apiKey, timeoutSeconds), values.output);
}

/** How often `capture --follow` lists the bucket. */
const CAPTURE_POLL_MS = 2_000;
const HOUR_MS = 3_600_000;
/** After the hour turns, --follow still lists the previous hour this long: its last writes land late. */
const CAPTURE_LATE_MS = 5 * 60_000;
/** A year: every hour of the window is listed once per version. */
const MAX_SINCE_MS = 366 * 24 * HOUR_MS;
/** Capture objects read at once. */
const CAPTURE_READS = 8;
const DURATION_UNIT_MS = { s: 1_000, m: 60_000, h: HOUR_MS, d: 24 * HOUR_MS } as const;

/** The fields of a capture line (lambdas/core/capture/payload-capture.ts captureLine) that the CLI reads. */
const captureLineSchema = z.object({
  captureData: z.object({
    endpointInput: z.object({ mode: z.literal("INPUT"), data: z.string() }).optional(),
    endpointOutput: z.object({ mode: z.literal("OUTPUT"), data: z.string() }).optional(),
  }),
  eventMetadata: z.object({
    eventId: z.string().min(1),
    inferenceTime: z.iso.datetime(),
    model: z.string(),
    version: z.number().int().positive(),
  }),
  eventVersion: z.string(),
});

/** A captured exchange as read back: its line is printed as it was written. */
interface CaptureRecord {
  readonly time: number;
  readonly eventId: string;
  readonly line: string;
}

/** What was printed from one hour prefix: its objects (written once, never changed) and its events. */
interface HourSeen {
  readonly keys: Set<string>;
  readonly eventIds: Set<string>;
}

/** `30m`, `1h`, `2d` in milliseconds. */
function parseDuration(text: string, option: string): number {
  const match = /^(\d{1,9})([smhd])$/.exec(text);
  const ms =
    match === null ? 0 : Number(match[1]) * DURATION_UNIT_MS[match[2] as keyof typeof DURATION_UNIT_MS];
  if (ms <= 0)
    throw new UsageError(
      `${option} '${text}' is not a duration: a positive whole number and a unit, s, m, h or d (30m, 1h, 2d)`,
    );
  return ms;
}

/** The versions of a model that have captures: the version folders under capture/<name>/. */
async function capturedVersions(target: Target, model: string, signal?: AbortSignal): Promise<number[]> {
  const base = `${CAPTURE_PREFIX}${model}/`;
  const versions: number[] = [];
  let token: string | undefined;
  do {
    const page = await target.s3.send(
      new ListObjectsV2Command({
        Bucket: target.bucket,
        Prefix: base,
        Delimiter: "/",
        ContinuationToken: token,
      }),
      { abortSignal: signal },
    );
    for (const { Prefix } of page.CommonPrefixes ?? []) {
      const version = Prefix?.slice(base.length, -1) ?? "";
      if (VERSION_PATTERN.test(version)) versions.push(Number(version));
    }
    token = page.NextContinuationToken;
  } while (token !== undefined);
  return versions.sort((a, b) => a - b);
}

/** The hour prefixes of these versions from the hour of `from` to the hour of `to`. */
function hourPrefixes(model: string, versions: readonly number[], from: number, to: number): string[] {
  const prefixes: string[] = [];
  for (const version of versions)
    for (let hour = Math.floor(from / HOUR_MS) * HOUR_MS; hour <= to; hour += HOUR_MS)
      prefixes.push(captureHourPrefix(model, version, hour));
  return prefixes;
}

async function listCaptureKeys(target: Target, prefix: string, signal?: AbortSignal): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await target.s3.send(
      new ListObjectsV2Command({ Bucket: target.bucket, Prefix: prefix, ContinuationToken: token }),
      { abortSignal: signal },
    );
    for (const { Key } of page.Contents ?? []) if (Key?.endsWith(".jsonl")) keys.push(Key);
    token = page.NextContinuationToken;
  } while (token !== undefined);
  return keys;
}

/** Why a line is not a capture line, in a few words. */
function captureLineProblem(line: string): string | CaptureRecord {
  const json = parseJsonOrUndefined(line);
  if (json === undefined) return "not JSON";
  const parsed = captureLineSchema.safeParse(json);
  if (!parsed.success) {
    const [issue] = parsed.error.issues;
    return `not a capture line (${issue?.path.join(".") || "the line"}: ${issue?.message})`;
  }
  const { eventId, inferenceTime } = parsed.data.eventMetadata;
  return { time: Date.parse(inferenceTime), eventId, line };
}

/** One capture object's exchanges; a malformed line is reported on stderr and skipped. */
async function readCaptureObject(
  target: Target,
  key: string,
  signal?: AbortSignal,
): Promise<CaptureRecord[]> {
  let text: string;
  try {
    const object = await target.s3.send(new GetObjectCommand({ Bucket: target.bucket, Key: key }), {
      abortSignal: signal,
    });
    text = (await object.Body?.transformToString("utf8")) ?? "";
  } catch (error) {
    // Expired by the lifecycle rule between the listing and the read.
    if ((error as { name?: string }).name === "NoSuchKey") return [];
    throw error;
  }
  const records: CaptureRecord[] = [];
  for (const [index, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (line === "") continue;
    const record = captureLineProblem(line);
    if (typeof record === "string")
      console.error(`maas capture: skipped line ${index + 1} of ${key}: ${record}`);
    else records.push(record);
  }
  return records;
}

/** The exchanges of these objects, CAPTURE_READS objects at a time. */
async function readCaptureObjects(
  target: Target,
  keys: readonly string[],
  signal?: AbortSignal,
): Promise<CaptureRecord[]> {
  const records: CaptureRecord[] = [];
  let next = 0;
  const reader = async () => {
    while (next < keys.length) records.push(...(await readCaptureObject(target, keys[next++]!, signal)));
  };
  await Promise.all(Array.from({ length: Math.min(CAPTURE_READS, keys.length) }, reader));
  return records;
}

/** Records in [from, until] not seen before (by event id: a retried write can repeat one), oldest first. */
function freshRecords(
  records: readonly CaptureRecord[],
  seen: (eventId: string) => boolean,
  from: number,
  until: number,
) {
  const fresh = new Map<string, CaptureRecord>();
  for (const record of records)
    if (record.time >= from && record.time <= until && !seen(record.eventId) && !fresh.has(record.eventId))
      fresh.set(record.eventId, record);
  return [...fresh.values()].sort((a, b) => a.time - b.time);
}

async function printLines(records: readonly CaptureRecord[]): Promise<void> {
  for (const { line } of records) if (!process.stdout.write(`${line}\n`)) await once(process.stdout, "drain");
}

/** Reads every capture of these hour prefixes; answers what it read, per prefix. */
async function readHours(
  target: Target,
  prefixes: readonly string[],
  signal?: AbortSignal,
  seen: ReadonlyMap<string, HourSeen> = new Map(),
): Promise<Map<string, { keys: string[]; records: CaptureRecord[] }>> {
  const read = new Map<string, { keys: string[]; records: CaptureRecord[] }>();
  for (const prefix of prefixes) {
    const known = seen.get(prefix)?.keys;
    const keys = (await listCaptureKeys(target, prefix, signal)).filter((key) => !known?.has(key));
    read.set(prefix, { keys, records: await readCaptureObjects(target, keys, signal) });
  }
  return read;
}

/**
 * Polls the current hour's prefixes (and the previous hour's, for CAPTURE_LATE_MS after it turns) and
 * prints what is new, until `signal`. Keeps the keys and event ids of those hours only.
 */
async function followCaptures(
  target: Target,
  model: string,
  version: number | undefined,
  from: number,
  seen: Map<string, HourSeen>,
  signal: AbortSignal,
): Promise<void> {
  for (;;) {
    try {
      await sleep(CAPTURE_POLL_MS, undefined, { signal });
      const now = Date.now();
      const versions = version === undefined ? await capturedVersions(target, model, signal) : [version];
      const prefixes = hourPrefixes(model, versions, Math.max(from, now - CAPTURE_LATE_MS), now);
      for (const prefix of seen.keys()) if (!prefixes.includes(prefix)) seen.delete(prefix);
      const read = await readHours(target, prefixes, signal, seen);
      const printed = (eventId: string) => [...seen.values()].some((hour) => hour.eventIds.has(eventId));
      const all = [...read.values()].flatMap((hour) => hour.records);
      await printLines(freshRecords(all, printed, from, Number.POSITIVE_INFINITY));
      // Marked once printed: a poll that failed half way is read again whole.
      for (const [prefix, { keys, records }] of read) {
        const hour = seen.get(prefix) ?? { keys: new Set<string>(), eventIds: new Set<string>() };
        seen.set(prefix, hour);
        for (const key of keys) hour.keys.add(key);
        for (const record of records) hour.eventIds.add(record.eventId);
      }
    } catch (error) {
      if (signal.aborted) return;
      console.error(`maas capture: ${(error as Error).message}; trying again in ${CAPTURE_POLL_MS / 1000} s`);
    }
  }
}

/** `captures 50% of its exchanges: requests and responses`, or `captures nothing`. */
function describeCapture(capture: CaptureSettings | undefined): string {
  if (capture === undefined || capture.samplePercent === 0 || !(capture.requests || capture.responses))
    return "captures nothing";
  const sides =
    capture.requests && capture.responses
      ? "requests and responses"
      : capture.requests
        ? "requests only"
        : "responses only";
  return `captures ${capture.samplePercent}% of its exchanges: ${sides}`;
}

/** `capture --set` and `--off`: the admin API's PUT and DELETE .../capture. */
async function switchCapture(
  values: Record<string, string | boolean | undefined>,
  model: string,
  version: string,
): Promise<number> {
  let body: string | undefined;
  if (values.set !== undefined) {
    const text = values.set as string;
    const percent = /^\d+(\.\d+)?$/.test(text) ? Number(text) : Number.NaN;
    if (!(percent >= 0 && percent <= 100))
      throw new UsageError(`--set '${text}' is not a percentage: a number from 0 to 100`);
    if (values["no-requests"] && values["no-responses"])
      throw new UsageError("--no-requests with --no-responses leaves nothing to capture: use --off");
    body = JSON.stringify({
      samplePercent: percent,
      requests: !values["no-requests"],
      responses: !values["no-responses"],
    });
  }
  // Only the API is needed: in AWS --api alone will do, without --bucket.
  const target = await resolveTarget({
    ...values,
    bucket: (values.bucket as string | undefined) ?? (values.api === undefined ? undefined : "-"),
  });
  const path = `/admin/models/${model}/versions/${version}/capture`;
  const response = await call(target, body === undefined ? "DELETE" : "PUT", path, { body });
  if (response.status >= 300) throw failure(response);
  const record = response.json as VersionRecord;
  if (values.json) console.log(JSON.stringify(record, null, 2));
  else
    console.log(
      `${model} version ${version} ${describeCapture(record.capture)}; inference sees it within the registry cache's TTL`,
    );
  return 0;
}

async function capture(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      version: { type: "string" },
      since: { type: "string" },
      limit: { type: "string" },
      follow: { type: "boolean" },
      set: { type: "string" },
      off: { type: "boolean" },
      "no-requests": { type: "boolean" },
      "no-responses": { type: "boolean" },
      json: { type: "boolean" },
      ...TARGET_OPTIONS,
    },
  });
  const [model, ...extra] = positionals;
  if (model === undefined) throw new UsageError("capture needs a model name");
  if (extra.length > 0) throw new UsageError(`unexpected argument '${extra[0]}'`);
  if (!MODEL_NAME_PATTERN.test(model))
    throw new UsageError(
      `'${model}' is not a valid model name: lower-case letters, digits, '-', '_', '.' (at most 64)`,
    );
  if (values.version !== undefined && !VERSION_PATTERN.test(values.version))
    throw new UsageError(
      `--version '${values.version}' is not a version number (captures are kept per version number, not alias)`,
    );
  const switching = values.set !== undefined || values.off === true;
  const misplaced = switching
    ? (["since", "limit", "follow"] as const).filter((option) => values[option] !== undefined)
    : (["no-requests", "no-responses", "json"] as const).filter((option) => values[option] !== undefined);
  if (misplaced.length > 0)
    throw new UsageError(
      switching
        ? `--${misplaced.join(", --")} read${misplaced.length === 1 ? "s" : ""} captures: not with --set or --off`
        : `--${misplaced.join(", --")} go${misplaced.length === 1 ? "es" : ""} with --set or --off only`,
    );
  if (switching) {
    if (values.set !== undefined && values.off) throw new UsageError("--set and --off cannot go together");
    if (values.off && (values["no-requests"] || values["no-responses"]))
      throw new UsageError("--no-requests and --no-responses go with --set, not --off");
    if (values.version === undefined)
      throw new UsageError(
        `--${values.off ? "off" : "set"} needs --version: capture is switched per version`,
      );
    return switchCapture(values, model, values.version);
  }

  const since = parseDuration(values.since ?? "1h", "--since");
  if (since > MAX_SINCE_MS)
    throw new UsageError(
      `--since '${values.since}' is too far back: at most 366d (each hour is one listing)`,
    );
  const limit = values.limit === undefined ? undefined : Number(values.limit);
  if (limit !== undefined && !(/^\d+$/.test(values.limit ?? "") && Number.isSafeInteger(limit) && limit > 0))
    throw new UsageError(`--limit '${values.limit}' is not a positive whole number`);
  const target = await resolveTarget(values);
  const version = values.version === undefined ? undefined : Number(values.version);
  const now = Date.now();
  const from = now - since;
  const versions = version === undefined ? await capturedVersions(target, model) : [version];
  const read = await readHours(target, hourPrefixes(model, versions, from, now));
  const all = [...read.values()].flatMap((hour) => hour.records);
  // A follower takes what was written while it read: they are past `now`, and its polls skip these objects.
  const records = freshRecords(all, () => false, from, values.follow ? Number.POSITIVE_INFINITY : now);
  await printLines(limit === undefined ? records : records.slice(-limit));
  const which = `${model}${version === undefined ? "" : ` version ${version}`}`;
  if (records.length === 0)
    console.error(
      `maas capture: no captures of ${which} in the last ${values.since ?? "1h"} (\`maas versions ${model} --json\` shows each version's capture)`,
    );
  if (!values.follow) return 0;

  const seen = new Map<string, HourSeen>();
  for (const [prefix, hour] of read)
    seen.set(prefix, {
      keys: new Set(hour.keys),
      eventIds: new Set(hour.records.map((record) => record.eventId)),
    });
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  console.error(`maas capture: following ${which}; Ctrl-C stops`);
  try {
    await followCaptures(target, model, version, from, seen, stop.signal);
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === "--help" || command === "-h" || command === "help") {
    console.log(HELP.main);
    return command === undefined ? 2 : 0;
  }
  if (!(command in HELP) || command === "main") {
    console.error(`unknown command '${command}'\n\n${HELP.main}`);
    return 2;
  }
  if (rest.includes("--help") || rest.includes("-h")) {
    console.log(HELP[command]);
    return 0;
  }
  try {
    if (command === "publish") return await publish(rest);
    if (command === "invoke") return await invoke(rest);
    if (command === "capture") return await capture(rest);
    return await admin(command, rest);
  } catch (error) {
    // parseArgs refuses unknown options and missing values with ERR_PARSE_ARGS_* codes: usage errors too.
    const code = (error as { code?: unknown }).code;
    if (error instanceof UsageError || (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS_"))) {
      console.error(`maas ${command}: ${(error as Error).message}\n\n${HELP[command]}`);
      return 2;
    }
    console.error(`maas ${command}: ${(error as Error).message}`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
