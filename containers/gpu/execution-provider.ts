import { execFile } from "node:child_process";
import { totalmem } from "node:os";
import { promisify } from "node:util";
import type * as Ort from "onnxruntime-node";
import type { ExecutionProviderName } from "./config.ts";

/** y = x + x on FP32 [1]: enough for a provider to have to load its libraries and run a kernel. */
const PROBE_MODEL = Buffer.from(
  "CAgSD3NlcnZlcmxlc3MtbWFhczIAOkAKFQoBeAoBeBIBeRoFQWRkXzAiA0FkZBIFcHJvYmVaDwoBeBIKCggIARIECgIIAWIPCgF5EgoKCAgBEgQKAggBQgQKABAR",
  "base64",
);

export interface ProviderProbe {
  readonly name: ExecutionProviderName;
  readonly available: boolean;
  readonly error?: string;
}

export interface ProviderChoice {
  readonly name: ExecutionProviderName;
  readonly probes: readonly ProviderProbe[];
}

export function providerOption(name: ExecutionProviderName): Ort.InferenceSession.ExecutionProviderConfig {
  return name === "cuda" ? { name: "cuda", deviceId: 0 } : name;
}

/**
 * Picks the first provider, in order, that can create a session and run the probe model. A failure
 * is recorded with its reason (missing CUDA libraries, no GPU adapter) for /ping to show.
 */
export async function chooseExecutionProvider(
  ort: typeof Ort,
  candidates: readonly ExecutionProviderName[],
): Promise<ProviderChoice> {
  const probes: ProviderProbe[] = [];
  for (const name of candidates) {
    try {
      const session = await ort.InferenceSession.create(PROBE_MODEL, {
        executionProviders: [providerOption(name)],
        logSeverityLevel: 4,
      });
      try {
        const x = new ort.Tensor("float32", Float32Array.of(21), [1]);
        const { y } = await session.run({ x });
        if ((y?.data as Float32Array | undefined)?.[0] !== 42)
          throw new Error("the probe model gave a wrong answer");
      } finally {
        await session.release();
      }
      probes.push({ name, available: true });
      return { name, probes };
    } catch (error) {
      probes.push({ name, available: false, error: firstLine((error as Error).message) });
    }
  }
  throw new Error(
    `no execution provider works: ${probes.map((probe) => `${probe.name}: ${probe.error}`).join("; ")}`,
  );
}

function firstLine(message: string): string {
  const line = message.split("\n")[0] ?? message;
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
}

const run = promisify(execFile);

/** Memory for models: 90% of the first GPU's (from nvidia-smi) on a GPU provider, else half the RAM. */
export async function defaultMemoryBudget(provider: ExecutionProviderName): Promise<number> {
  if (provider !== "cpu") {
    try {
      const { stdout } = await run(
        "nvidia-smi",
        ["--query-gpu=memory.total", "--format=csv,noheader,nounits", "--id=0"],
        { timeout: 5_000 },
      );
      const mebibytes = Number(stdout.trim());
      if (Number.isFinite(mebibytes) && mebibytes > 0) return Math.floor(mebibytes * 1024 * 1024 * 0.9);
    } catch {
      // no nvidia-smi (WebGPU on another vendor, or a CPU machine): fall back to RAM
    }
  }
  return Math.floor(totalmem() / 2);
}
