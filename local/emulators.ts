/**
 * The local stack's AWS: S3 and SQS from fauxqs, DynamoDB from dynalite, both in this process and both
 * persisted under `dataDir`, so the handlers run their real SDK code against them. fauxqs takes unsigned
 * requests, so it listens on an internal loopback port behind a gate (s3-signature-gate.ts) that owns the
 * public port and passes only requests signed with `credentials`; dynalite stays on loopback.
 *
 *   const emulators = await startEmulators({ dataDir: ".maas", s3Port: 4566, bucket, table, queues });
 *   emulators.s3Client();            // shared clients, already pointed at the emulators
 *   emulators.fauxqs.spy;            // every S3 upload / SQS message, for the S3 -> SQS bridge
 *   await emulators.stop();
 *
 * Layout under dataDir: `fauxqs/` (SQLite: queues and messages), `s3/` (objects as plain files:
 * `s3/buckets/<bucket>/objects/<key>.data`), `dynamodb/` (LevelDB). The bucket, the registry table and
 * the queues are created only when missing, so a restart keeps what was there.
 */
import { mkdir } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { createRequire } from "node:module";
import { type ListenOptions, Server as NetServer } from "node:net";
import { join } from "node:path";
import {
  CreateTableCommand,
  type CreateTableCommandInput,
  DescribeTableCommand,
  DynamoDBClient,
  ResourceInUseException,
  ResourceNotFoundException,
} from "@aws-sdk/client-dynamodb";
import { S3Client } from "@aws-sdk/client-s3";
import { type FauxqsServer, startFauxqs } from "fauxqs";
import { jobsTableDefinition } from "#aws/jobs/aws-jobs.ts";
import { registryTableDefinition } from "#aws/registry/table.ts";
import { listen } from "./gateway.ts";
import { type SignatureGate, startSignatureGate } from "./s3-signature-gate.ts";

export interface LocalQueue {
  readonly name: string;
  /** Messages received this many times without being deleted move here, as with a redrive policy. */
  readonly deadLetter?: { readonly name: string; readonly maxReceiveCount: number };
  readonly visibilityTimeoutSeconds?: number;
}

export interface EmulatorOptions {
  /** Root of the persisted state; created when missing. */
  readonly dataDir: string;
  /** The signed S3 and SQS endpoint's port; 0 picks a free one. */
  readonly s3Port: number;
  /** Address the S3 and SQS endpoint listens on (DynamoDB and fauxqs itself stay on loopback). @default "127.0.0.1" */
  readonly host?: string;
  /** dynalite port; @default 0 (a free one) */
  readonly dynamoPort?: number;
  readonly bucket: string;
  /** Registry table, created from `registryTableDefinition`. */
  readonly table: string;
  /** Asynchronous inference's jobs table, created from `jobsTableDefinition` when named. */
  readonly jobsTable?: string;
  /** Standard SQS queues to create when missing, each with its dead-letter queue if named. */
  readonly queues?: readonly LocalQueue[];
  /** The only credentials the S3 and SQS endpoint takes signatures from. @default local / local */
  readonly credentials?: LocalCredentials;
}

export interface LocalCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

export interface Emulators {
  /** `http://127.0.0.1:<port>`: S3 and SQS (fauxqs serves both on one port), signed requests only. */
  readonly s3Endpoint: string;
  readonly dynamoEndpoint: string;
  readonly region: "us-east-1";
  readonly credentials: LocalCredentials;
  /** The fauxqs server, for `spy` (S3 uploads, SQS messages) and `inspectQueue`. */
  readonly fauxqs: FauxqsServer;
  /** The servers this opened, for checks of where they listen. */
  readonly servers: { readonly s3: Server; readonly dynamo: Server };
  /** Queue URL for a queue name, valid for this run's port (persisted URLs keep the port they were made on). */
  queueUrl(name: string): string;
  /** Queue ARN for a queue name, as redrive policies and SQS events name the queue. */
  queueArn(name: string): string;
  /** One shared client per service (S3 path-style), destroyed by stop(). */
  s3Client(): S3Client;
  dynamoClient(): DynamoDBClient;
  stop(): Promise<void>;
}

const REGION = "us-east-1";
const LOOPBACK = "127.0.0.1";
const CREDENTIALS = { accessKeyId: "local", secretAccessKey: "local" } as const;
// fauxqs puts every queue in this account; its lookups only use the last path segment.
const FAUXQS_ACCOUNT_ID = "000000000000";
const TABLE_ACTIVE_TIMEOUT_MS = 5_000;

function queueArn(name: string): string {
  return `arn:aws:sqs:${REGION}:${FAUXQS_ACCOUNT_ID}:${name}`;
}

interface DynaliteOptions {
  path?: string;
  createTableMs?: number;
  deleteTableMs?: number;
  updateTableMs?: number;
}
interface LevelDatabase {
  open(): Promise<void>;
  close(): Promise<void>;
}
// dynalite is CommonJS without type declarations: it returns a plain http.Server.
const requireHere = createRequire(import.meta.url);
const createDynalite = requireHere("dynalite") as (options: DynaliteOptions) => Server;
// dynalite's own LevelDB binding, resolved from dynalite so that the probe opens the store the same way.
const { Level } = createRequire(requireHere.resolve("dynalite"))("level") as {
  Level: new (location: string) => LevelDatabase;
};

/** Thrown when another running local stack holds `dataDir`. */
export class DataDirInUseError extends Error {
  constructor(readonly dataDir: string) {
    super(
      `${dataDir} is in use by another running local stack (its DynamoDB store is locked). ` +
        "Stop that one, or set MAAS_DATA_DIR to another directory.",
    );
    this.name = "DataDirInUseError";
  }
}

export async function startEmulators(options: EmulatorOptions): Promise<Emulators> {
  const dirs = {
    fauxqs: join(options.dataDir, "fauxqs"),
    s3: join(options.dataDir, "s3"),
    dynamodb: join(options.dataDir, "dynamodb"),
  };
  await Promise.all(Object.values(dirs).map((dir) => mkdir(dir, { recursive: true })));
  await assertDataDirFree(options.dataDir, dirs.dynamodb);

  const credentials = options.credentials ?? CREDENTIALS;
  // The public port first: fauxqs opens its SQLite store before listening and leaks it if listen fails.
  const gate = await startSignatureGate({
    port: options.s3Port,
    host: options.host ?? LOOPBACK,
    credentials,
    upstreamPort: 0,
  });
  let fauxqs: FauxqsServer;
  try {
    fauxqs = await startFauxqsOnLoopback({
      logger: false,
      // Large enough that tests can count every message of a thousand-event replay.
      messageSpies: { bufferSize: 20_000 },
      dataDir: dirs.fauxqs,
      s3StorageDir: dirs.s3,
    });
  } catch (error) {
    await gate.close();
    throw error;
  }
  gate.setUpstreamPort(fauxqs.port);

  let dynalite: Server | undefined;
  let emulators: Emulators | undefined;
  try {
    const dynamoPort = options.dynamoPort ?? 0;
    // Same reason: dynalite opens (and locks) its LevelDB before listening.
    await assertPortFree(dynamoPort, LOOPBACK, dynamoPortHint);
    dynalite = createDynalite({ path: dirs.dynamodb, createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
    const boundDynamoPort = await listen(dynalite, dynamoPort, LOOPBACK, dynamoPortHint);
    emulators = assemble(fauxqs, gate, options.host ?? LOOPBACK, dynalite, boundDynamoPort, credentials);
    fauxqs.setup({ buckets: [options.bucket], queues: queueDefinitions(options.queues ?? []) });
    await ensureTable(emulators.dynamoClient(), registryTableDefinition(options.table));
    if (options.jobsTable !== undefined)
      await ensureTable(emulators.dynamoClient(), jobsTableDefinition(options.jobsTable));
    return emulators;
  } catch (error) {
    if (emulators) await emulators.stop().catch(() => {});
    else
      await Promise.allSettled([
        gate.close(),
        fauxqs.stop(),
        dynalite ? closeServer(dynalite) : Promise.resolve(),
      ]);
    throw error;
  }
}

/**
 * fauxqs 2.4.1's startFauxqs listens on 0.0.0.0 whatever its options say (its `host` only names queue
 * URLs), so its one listen call, recognised by a port picked here, is moved to loopback.
 */
async function startFauxqsOnLoopback(
  options: Omit<NonNullable<Parameters<typeof startFauxqs>[0]>, "port" | "host">,
): Promise<FauxqsServer> {
  const probe = createServer();
  const port = await listen(probe, 0, LOOPBACK, {
    service: "The S3/SQS emulator (fauxqs)",
    envVar: "MAAS_S3_PORT",
  });
  await closeServer(probe);
  const original = NetServer.prototype.listen;
  NetServer.prototype.listen = function listenOnLoopback(this: NetServer, ...args: unknown[]) {
    const [first] = args;
    if (typeof first === "object" && first !== null) {
      const listenOptions = first as ListenOptions;
      if (listenOptions.port === port && listenOptions.host === "0.0.0.0")
        args[0] = { ...listenOptions, host: LOOPBACK };
    }
    return (original as (...listenArgs: unknown[]) => NetServer).apply(this, args);
  } as typeof original;
  try {
    const fauxqs = await startFauxqs({ ...options, port });
    if (!new URL(fauxqs.address).hostname.startsWith("127.")) {
      await fauxqs.stop();
      throw new Error(`fauxqs listens on ${fauxqs.address}, not on loopback`);
    }
    return fauxqs;
  } finally {
    NetServer.prototype.listen = original;
  }
}

/** Dead-letter queues first, so the redrive policies can name them. */
function queueDefinitions(queues: readonly LocalQueue[]) {
  const deadLetters = queues.flatMap((queue) => (queue.deadLetter ? [{ name: queue.deadLetter.name }] : []));
  const main = queues.map((queue) => ({
    name: queue.name,
    attributes: {
      ...(queue.visibilityTimeoutSeconds === undefined
        ? {}
        : { VisibilityTimeout: String(queue.visibilityTimeoutSeconds) }),
      ...(queue.deadLetter === undefined
        ? {}
        : {
            RedrivePolicy: JSON.stringify({
              deadLetterTargetArn: queueArn(queue.deadLetter.name),
              maxReceiveCount: String(queue.deadLetter.maxReceiveCount),
            }),
          }),
    },
  }));
  return [...deadLetters, ...main];
}

const dynamoPortHint = {
  service: "The DynamoDB emulator (dynalite)",
  envVar: "the dynamoPort option",
};

function assemble(
  fauxqs: FauxqsServer,
  gate: SignatureGate,
  host: string,
  dynalite: Server,
  dynamoPort: number,
  credentials: LocalCredentials,
): Emulators {
  const s3Endpoint = `http://${connectHost(host)}:${gate.port}`;
  const dynamoEndpoint = `http://${LOOPBACK}:${dynamoPort}`;
  const common = { region: REGION, credentials };
  let s3: S3Client | undefined;
  let dynamo: DynamoDBClient | undefined;
  return {
    s3Endpoint,
    dynamoEndpoint,
    region: REGION,
    credentials,
    fauxqs,
    servers: { s3: gate.server, dynamo: dynalite },
    queueUrl: (name) => `${s3Endpoint}/${FAUXQS_ACCOUNT_ID}/${name}`,
    queueArn,
    s3Client: () => {
      s3 ??= new S3Client({ ...common, endpoint: s3Endpoint, forcePathStyle: true });
      return s3;
    },
    dynamoClient: () => {
      dynamo ??= new DynamoDBClient({ ...common, endpoint: dynamoEndpoint });
      return dynamo;
    },
    stop: async () => {
      s3?.destroy();
      dynamo?.destroy();
      await Promise.all([gate.close(), fauxqs.stop(), closeServer(dynalite)]);
    },
  };
}

async function ensureTable(client: DynamoDBClient, definition: CreateTableCommandInput): Promise<void> {
  const table = definition.TableName;
  try {
    await client.send(new CreateTableCommand(definition));
  } catch (error) {
    if (!(error instanceof ResourceInUseException)) throw error;
  }
  // dynalite reports CREATING for a moment even with createTableMs 0.
  const deadline = Date.now() + TABLE_ACTIVE_TIMEOUT_MS;
  for (;;) {
    const status = await client
      .send(new DescribeTableCommand({ TableName: table }))
      .then((described) => described.Table?.TableStatus)
      .catch((error: unknown) => {
        if (error instanceof ResourceNotFoundException) return undefined;
        throw error;
      });
    if (status === "ACTIVE") return;
    if (Date.now() > deadline) throw new Error(`DynamoDB table ${table} is not ACTIVE (status: ${status})`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** dynalite throws from a callback (killing the process) when its LevelDB is locked, so look first. */
async function assertDataDirFree(dataDir: string, levelDir: string): Promise<void> {
  const probe = new Level(levelDir);
  try {
    await probe.open();
  } catch (error) {
    const cause = error instanceof Error ? error.cause : undefined;
    if (cause instanceof Error && "code" in cause && cause.code === "LEVEL_LOCKED")
      throw new DataDirInUseError(dataDir);
    throw error;
  }
  await probe.close();
}

async function assertPortFree(
  port: number,
  host: string,
  what: { service: string; envVar: string },
): Promise<void> {
  if (port === 0) return;
  const probe = createServer();
  await listen(probe, port, host, what);
  await closeServer(probe);
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    server.close((error) => (error ? reject(error) : resolve()));
    server.closeAllConnections();
  });
}

/** Where this machine's clients reach a server listening on `host`: a wildcard is reached on loopback. */
export function connectHost(host: string): string {
  if (host === "0.0.0.0" || host === "::" || host === "") return LOOPBACK;
  return host.includes(":") ? `[${host}]` : host;
}
