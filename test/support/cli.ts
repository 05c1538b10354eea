import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { LocalStackOptions } from "../../local/stack.ts";
import { writeStackFile } from "../../local/stack-file.ts";
import { startTestStack, TEST_ADMIN_KEY, TEST_API_KEY, type TestStack } from "./local-stack.ts";

/** The repository root, where the CLI runs from. */
export const ROOT = fileURLToPath(new URL("../..", import.meta.url));
/** `node` arguments that run the CLI from source, as `npx maas` does. */
export const CLI = ["--disable-warning=ExperimentalWarning", "--import", "tsx", "bin/maas.ts"];

export interface CliResult<Out = string> {
  readonly code: number;
  readonly stdout: Out;
  readonly stderr: string;
}

/**
 * Runs `maas <args>` as a user would, against the stack named by `dataDir`'s stack.json; stdout as
 * bytes (a binary result may come there). A non-zero exit is a result, not a throw.
 */
export async function runMaasBytes(
  dataDir: string | undefined,
  args: readonly string[],
  timeoutMs: number,
): Promise<CliResult<Buffer>> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [...CLI, ...args], {
      cwd: ROOT,
      env: { ...process.env, MAAS_DATA_DIR: dataDir },
      timeout: timeoutMs,
      encoding: "buffer",
      maxBuffer: 64 * 1024 * 1024,
    });
    return { code: 0, stdout, stderr: stderr.toString("utf8") };
  } catch (error) {
    const failed = error as { code?: number; stdout?: Buffer; stderr?: Buffer };
    if (typeof failed.code !== "number") throw error;
    return {
      code: failed.code,
      stdout: failed.stdout ?? Buffer.alloc(0),
      stderr: failed.stderr?.toString("utf8") ?? "",
    };
  }
}

/** runMaasBytes with stdout as text. */
export async function runMaas(
  dataDir: string | undefined,
  args: readonly string[],
  timeoutMs: number,
): Promise<CliResult> {
  const result = await runMaasBytes(dataDir, args, timeoutMs);
  return { ...result, stdout: result.stdout.toString("utf8") };
}

/** A test stack with its own S3 credentials, and the stack file the CLI finds it by. */
export async function startCliStack(
  name: string,
  options: Partial<LocalStackOptions> = {},
): Promise<TestStack> {
  const s3Credentials = options.s3Credentials ?? {
    accessKeyId: `MAAS${name.replace(/[^a-z]/gi, "").toUpperCase()}`,
    secretAccessKey: `${name}-secret`,
  };
  const started = await startTestStack(name, { ...options, s3Credentials });
  const { stack, dataDir } = started;
  await writeStackFile(dataDir, {
    url: stack.url,
    s3Endpoint: stack.emulators.s3Endpoint,
    bucket: stack.bucket,
    apiKey: TEST_API_KEY,
    adminKey: TEST_ADMIN_KEY,
    s3Credentials,
  });
  return started;
}
