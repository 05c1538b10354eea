import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import type * as Ort from "onnxruntime-node";
import { type ServableVersion, servingArtifact } from "#core/model.ts";
import { DEFAULT_DEADLINE_MS, type ModelRunner, type RunOptions } from "#core/runner.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import type { ArtifactCache, LocalArtifact } from "./artifact-cache.ts";
import type { SessionPool } from "./session-pool.ts";
import { SessionLostError, type WorkerSession } from "./worker-session.ts";

/** The module once loaded, or the error its load threw, which every later call throws again. */
let ortLoad: { readonly ort: typeof Ort } | { readonly error: unknown } | undefined;

/**
 * Loads onnxruntime-node on first use. The inference function starts it once an artifact's request
 * is on its way (ArtifactCache's `whileWaiting`), so its native library loads while S3 starts the
 * object; otherwise the first session creation loads it.
 *
 * Through CommonJS `require`, which is what the package is: import() would take each of its files
 * through the ESM loader's translation, about 10 ms more of the same block on the build machine. A
 * load that fails is kept, and thrown to every caller.
 */
export function loadOrt(): typeof Ort {
  if (ortLoad === undefined) {
    try {
      ortLoad = { ort: createRequire(import.meta.url)("onnxruntime-node") as typeof Ort };
    } catch (error) {
      ortLoad = { error };
    }
  }
  if ("error" in ortLoad) throw ortLoad.error;
  return ortLoad.ort;
}

export function sessionOptions(intraOpThreads = availableParallelism()): Ort.InferenceSession.SessionOptions {
  return {
    executionProviders: ["cpu"],
    graphOptimizationLevel: "all",
    // Lambda's vCPUs scale with its memory setting; one request at a time per environment uses them all.
    intraOpNumThreads: intraOpThreads,
    interOpNumThreads: 1,
    executionMode: "sequential",
    logSeverityLevel: 3,
  };
}

export async function createOrtSession(
  artifact: LocalArtifact,
  intraOpThreads?: number,
): Promise<Ort.InferenceSession> {
  const ort = loadOrt();
  const options = sessionOptions(intraOpThreads);
  // Two calls because create's overloads take a path or bytes, not either.
  return typeof artifact === "string"
    ? ort.InferenceSession.create(artifact, options)
    : ort.InferenceSession.create(artifact, options);
}

/** Runs models inside this function, each session in a worker thread: artifact from the disk cache, session from the pool. */
export class OnnxRunner implements ModelRunner {
  readonly backend = "lambda" as const;
  readonly #artifacts: ArtifactCache;
  readonly #sessions: SessionPool<WorkerSession>;
  readonly #deadlineMs: number;

  /** `deadlineMs`: for runs whose caller gives no deadline (the service always does). */
  constructor(
    artifacts: ArtifactCache,
    sessions: SessionPool<WorkerSession>,
    deadlineMs = DEFAULT_DEADLINE_MS,
  ) {
    this.#artifacts = artifacts;
    this.#sessions = sessions;
    this.#deadlineMs = deadlineMs;
  }

  async load(version: ServableVersion): Promise<void> {
    const artifact = servingArtifact(version);
    await this.#sessions.use(
      artifact.sha256,
      artifact.bytes,
      () => this.#artifacts.load(artifact),
      async () => {},
    );
  }

  async run(
    version: ServableVersion,
    inputs: readonly NamedTensor[],
    outputs: readonly string[],
    options: RunOptions = {},
  ): Promise<NamedTensor[]> {
    const deadline = options.deadline ?? Date.now() + this.#deadlineMs;
    const artifact = servingArtifact(version);
    const attempt = () =>
      this.#sessions.use(
        artifact.sha256,
        artifact.bytes,
        () => this.#artifacts.load(artifact),
        async (session) => {
          try {
            return await session.run(inputs, outputs, deadline);
          } finally {
            // A session whose run passed its deadline is gone with its worker: the next run makes another.
            if (session.lost) void this.#sessions.discard(artifact.sha256, session);
          }
        },
      );
    try {
      // Awaited rather than returned: an async function that returns a promise takes two more ticks.
      return await attempt();
    } catch (error) {
      // Queued behind a run that passed its deadline (or a worker that died): once more, on a new session.
      if (!(error instanceof SessionLostError)) throw error;
      return await attempt();
    }
  }
}
