import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type LocalStack, type LocalStackOptions, startLocalStack } from "../../local/stack.ts";

export const TEST_API_KEY = "local-inference-key";
export const TEST_ADMIN_KEY = "local-admin-key";

export interface TestStack {
  readonly stack: LocalStack;
  readonly dataDir: string;
}

/**
 * A local stack for one test file: free ports, silent functions, the test keys, and a fresh data
 * directory under the system's temp dir (or `options.dataDir`, for a restart on the same state).
 */
export async function startTestStack(
  name: string,
  options: Partial<LocalStackOptions> = {},
): Promise<TestStack> {
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), `maas-${name}-`)));
  const stack = await startLocalStack({
    port: 0,
    s3Port: 0,
    apiKey: TEST_API_KEY,
    adminKey: TEST_ADMIN_KEY,
    logLevel: "SILENT",
    ...options,
    dataDir,
  });
  return { stack, dataDir };
}

/** Stops what startTestStack started, tolerating a start that failed half way. */
export async function stopTestStack(
  stack: LocalStack | undefined,
  dataDir: string | undefined,
): Promise<void> {
  await stack?.close();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
}
