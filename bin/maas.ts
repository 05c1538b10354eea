/**
 * `maas`: publish models and manage them, locally (the stack `npm start` runs) or in AWS.
 *   maas publish <file> --name N [--version V] [--manifest F] [--wait [--wait-timeout S]]
 *   maas models | versions <name> [--json] | alias <name> <alias> <version> | rollback <name> [alias]
 *   maas variant <name> <version> <kind>
 *   maas invoke <name> [--version V] --input JSON|@file
 * Locally every default comes from <data dir>/stack.json, written by `npm start`. In AWS: --bucket,
 * --api (the stack's API URL), --api-key for invoke, and the standard AWS profile and region.
 */
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { parseArgs } from "node:util";
import { HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { defaultProvider } from "@aws-sdk/credential-provider-node";
import { Upload } from "@aws-sdk/lib-storage";
import { Hash } from "@smithy/hash-node";
import { SignatureV4 } from "@smithy/signature-v4";
import type { HttpRequest } from "@smithy/types";
import { MODEL_NAME_PATTERN, VERSION_PATTERN } from "#core/model.ts";
import { manifestKey, modelKey, parseManifest } from "#core/registry/manifest.ts";
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

Sends a V2 infer request: --input is the request body, or only its "inputs" array.`,
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
  options: { body?: string; apiKey?: string } = {},
) {
  if (target.api === undefined) throw new UsageError("this command needs the API: pass --api <url>");
  const url = new URL(path.replace(/^\//, ""), target.api.endsWith("/") ? target.api : `${target.api}/`);
  const headers: Record<string, string> = { "content-type": "application/json", host: url.host };
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
  const response = await fetch(url, { method, headers, body: options.body });
  const text = await response.text();
  const json: unknown = text ? JSON.parse(text) : undefined;
  return { status: response.status, json, text };
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

function progress(total: number) {
  const started = Date.now();
  let finished = false;
  return (loaded: number) => {
    if (finished || (!process.stderr.isTTY && loaded < total)) return;
    finished = loaded >= total;
    const fraction = total === 0 ? 1 : loaded / total;
    const bar = "#".repeat(Math.round(fraction * 30)).padEnd(30, ".");
    const mbps = loaded / 1e6 / Math.max(0.001, (Date.now() - started) / 1000);
    const line = `[${bar}] ${(fraction * 100).toFixed(0).padStart(3)}%  ${(loaded / 1e6).toFixed(1)} MB  ${mbps.toFixed(1)} MB/s`;
    process.stderr.write(`\r${line}${finished ? "\n" : ""}`);
  };
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
  const show = progress(bytes.byteLength);
  const upload = new Upload({
    client: target.s3,
    params: { Bucket: target.bucket, Key: key, Body: bytes },
    partSize: 8 * 1024 * 1024,
    queueSize: 4,
  });
  upload.on("httpUploadProgress", (event) => show(event.loaded ?? 0));
  await upload.done();
  show(bytes.byteLength);
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

async function invoke(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      input: { type: "string" },
      version: { type: "string" },
      api: { type: "string" },
      "api-key": { type: "string" },
    },
  });
  const name = positionals[0];
  if (name === undefined || values.input === undefined)
    throw new UsageError("invoke needs a model name and --input");
  const text = values.input.startsWith("@") ? await readFile(values.input.slice(1), "utf8") : values.input;
  const parsed: unknown = JSON.parse(text);
  const body = JSON.stringify(Array.isArray(parsed) ? { inputs: parsed } : parsed);
  const target = await resolveTarget({ api: values.api, bucket: values.api === undefined ? undefined : "-" });
  const path = `/v2/models/${name}${values.version ? `/versions/${values.version}` : ""}/infer`;
  const response = await call(target, "POST", path, { body, apiKey: values["api-key"] });
  if (response.status >= 300) throw failure(response);
  console.log(JSON.stringify(response.json, null, 2));
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
    return await admin(command, rest);
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`maas ${command}: ${error.message}\n\n${HELP[command]}`);
      return 2;
    }
    console.error(`maas ${command}: ${(error as Error).message}`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
