/**
 * `npm start`: the whole service on this machine, with no AWS account. Configuration by environment:
 * PORT (API, 3000), MAAS_S3_PORT (S3/SQS emulator, 4566), MAAS_DYNAMODB_PORT (free port if unset),
 * MAAS_BIND (address of the API and S3 ports, 127.0.0.1; 0.0.0.0 opens them to the network),
 * MAAS_DATA_DIR (state, .maas), MAAS_API_KEY and MAAS_ADMIN_KEY (generated once and kept in the data dir),
 * MAAS_LAMBDA_MAX_MODEL_BYTES (larger models go to the local SageMaker stand-in; 512 MiB).
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import * as z from "zod";
import { exitProcess } from "#aws/onnx/worker-session.ts";
import { DEMO_MODEL, startLocalStack } from "./stack.ts";
import { DEFAULT_DATA_DIR, writeStackFile } from "./stack-file.ts";

/** SIGTERM to exit: in-flight requests get the gateway's grace, then the stack is down regardless. */
const STOP_LIMIT_MS = 8_000;

const port = z.coerce.number().int().min(0).max(65535);
const envSchema = z.object({
  PORT: port.default(3000),
  MAAS_S3_PORT: port.default(4566),
  MAAS_DYNAMODB_PORT: port.default(0),
  MAAS_BIND: z.union([z.ipv4(), z.ipv6()]).default("127.0.0.1"),
  MAAS_DATA_DIR: z.string().min(1).default(DEFAULT_DATA_DIR),
  MAAS_API_KEY: z.string().min(8, "MAAS_API_KEY must have at least 8 characters").optional(),
  MAAS_ADMIN_KEY: z.string().min(8, "MAAS_ADMIN_KEY must have at least 8 characters").optional(),
  MAAS_LAMBDA_MAX_MODEL_BYTES: z.coerce.number().int().positive().optional(),
});

const keysSchema = z.object({
  apiKey: z.string(),
  adminKey: z.string(),
  s3AccessKeyId: z.string().optional(),
  s3SecretAccessKey: z.string().optional(),
});

/**
 * Keys from the environment, else the ones generated on the first start, so pasted curls and `aws`
 * lines keep working: the API's, the admin API's, and the S3 endpoint's credentials.
 */
async function loadKeys(dataDir: string, env: z.infer<typeof envSchema>) {
  const file = join(dataDir, "keys.json");
  const saved = await readFile(file, "utf8").then(
    (text) => keysSchema.safeParse(JSON.parse(text)).data,
    () => undefined,
  );
  const keys = {
    apiKey: env.MAAS_API_KEY ?? saved?.apiKey ?? `maas-${randomBytes(12).toString("hex")}`,
    adminKey: env.MAAS_ADMIN_KEY ?? saved?.adminKey ?? `maas-admin-${randomBytes(12).toString("hex")}`,
    s3AccessKeyId: saved?.s3AccessKeyId ?? `MAAS${randomBytes(8).toString("hex").toUpperCase()}`,
    s3SecretAccessKey: saved?.s3SecretAccessKey ?? randomBytes(20).toString("base64url"),
  };
  if (
    saved?.apiKey !== keys.apiKey ||
    saved?.adminKey !== keys.adminKey ||
    saved?.s3AccessKeyId !== keys.s3AccessKeyId ||
    saved?.s3SecretAccessKey !== keys.s3SecretAccessKey
  ) {
    await mkdir(dataDir, { recursive: true });
    await writeFile(file, `${JSON.stringify(keys, null, 2)}\n`, { mode: 0o600 });
  }
  return keys;
}

async function main(): Promise<void> {
  const started = performance.now();
  const parsed = envSchema.safeParse(process.env);
  if (!parsed.success) {
    const details = parsed.error.issues
      .map((issue) => `${issue.path.join(".")}: ${issue.message}`)
      .join("\n  ");
    throw new Error(`invalid configuration:\n  ${details}`);
  }
  const env = parsed.data;
  const dataDir = resolve(env.MAAS_DATA_DIR);
  const keys = await loadKeys(dataDir, env);
  const stack = await startLocalStack({
    dataDir,
    port: env.PORT,
    s3Port: env.MAAS_S3_PORT,
    dynamoPort: env.MAAS_DYNAMODB_PORT,
    host: env.MAAS_BIND,
    ...(env.MAAS_LAMBDA_MAX_MODEL_BYTES === undefined
      ? {}
      : { lambdaMaxModelBytes: env.MAAS_LAMBDA_MAX_MODEL_BYTES }),
    apiKey: keys.apiKey,
    adminKey: keys.adminKey,
    s3Credentials: { accessKeyId: keys.s3AccessKeyId, secretAccessKey: keys.s3SecretAccessKey },
  });

  // What `maas` (bin/maas.ts) reads to find this stack without flags.
  await writeStackFile(dataDir, {
    url: stack.url,
    s3Endpoint: stack.emulators.s3Endpoint,
    bucket: stack.bucket,
    apiKey: keys.apiKey,
    adminKey: keys.adminKey,
    s3Credentials: stack.emulators.credentials,
  });

  const body = JSON.stringify({
    inputs: [{ name: "features", shape: [1, 4], datatype: "FP32", data: [[5.1, 3.5, 1.4, 0.2]] }],
  });
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const { accessKeyId, secretAccessKey } = stack.emulators.credentials;
  const awsEnv = `AWS_ACCESS_KEY_ID=${accessKeyId} AWS_SECRET_ACCESS_KEY=${secretAccessKey} AWS_DEFAULT_REGION=${stack.emulators.region}`;
  process.stdout.write(
    [
      "",
      `serverless-maas is up in ${seconds} s`,
      `  API          ${stack.url}   (Open Inference Protocol V2)`,
      `  console      ${stack.consoleUrl}   (sign in with the admin key and the API key)`,
      `  API key      ${keys.apiKey}`,
      `  admin key    ${keys.adminKey}`,
      `  S3 (models)  ${stack.emulators.s3Endpoint}   bucket ${stack.bucket}   (SigV4-signed requests only)`,
      `  S3 keys      access key id ${accessKeyId}, secret ${secretAccessKey}`,
      `  DynamoDB     ${stack.emulators.dynamoEndpoint}`,
      `  state        ${dataDir}`,
      "",
      `Classify an iris with the demo model '${DEMO_MODEL}':`,
      `  curl -s ${stack.url}/v2/models/${DEMO_MODEL}/infer -H 'x-api-key: ${keys.apiKey}' -H 'content-type: application/json' -d '${body}'`,
      "",
      "Publish a model (version 1 of <name>) with the AWS CLI:",
      `  ${awsEnv} aws --endpoint-url ${stack.emulators.s3Endpoint} s3 cp model.onnx s3://${stack.bucket}/models/<name>/1/model.onnx`,
      "",
      ...(env.MAAS_BIND === "127.0.0.1"
        ? []
        : [`MAAS_BIND=${env.MAAS_BIND}: the API and S3 ports are open beyond this machine.`, ""]),
      "Ctrl-C stops it; state is kept for the next start.",
      "",
    ].join("\n"),
  );

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`\n${signal}: stopping...\n`);
    // Whatever close() waits on, the stack is down within STOP_LIMIT_MS of the signal.
    setTimeout(() => {
      process.stderr.write(`still stopping after ${STOP_LIMIT_MS} ms: exiting now\n`);
      exitProcess(1);
    }, STOP_LIMIT_MS).unref();
    stack.close().then(
      () => exitProcess(0),
      (error: unknown) => {
        process.stderr.write(`error while stopping: ${(error as Error).message}\n`);
        exitProcess(1);
      },
    );
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
}

main().catch((error: unknown) => {
  process.stderr.write(`npm start failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
