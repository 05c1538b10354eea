import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type LocalStack, type LocalStackOptions, startLocalStack } from "../local/stack.ts";

/** The benches' local stack: free ports, silent functions, a temporary data directory. */
export interface BenchStack {
  readonly stack: LocalStack;
  readonly dataDir: string;
  /** Stops the stack and removes its data directory. */
  close(): Promise<void>;
}

export const BENCH_API_KEY = "bench-key-1";

export async function startBenchStack(
  name: string,
  options: Partial<LocalStackOptions> = {},
): Promise<BenchStack> {
  const dataDir = await mkdtemp(join(tmpdir(), `maas-bench-${name}-`));
  const stack = await startLocalStack({
    dataDir,
    port: 0,
    s3Port: 0,
    apiKey: BENCH_API_KEY,
    adminKey: "bench-admin-1",
    logLevel: "SILENT",
    ...options,
  });
  return {
    stack,
    dataDir,
    close: async () => {
      await stack.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Waits until each model's version 1 has been through the optimizer: its benchmarks would share the cores. */
export async function optimizerIdle(stack: LocalStack, names: readonly string[]): Promise<void> {
  const deadline = Date.now() + 300_000;
  for (const name of names) {
    while ((await stack.registry.getVersionConsistent(name, 1))?.optimizedAt === undefined) {
      if (Date.now() > deadline) throw new Error(`${name} was not optimized in time`);
      await new Promise((wake) => setTimeout(wake, 100));
    }
  }
}
