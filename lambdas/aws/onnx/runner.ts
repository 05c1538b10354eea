import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import type * as Ort from "onnxruntime-node";
import { type ServableVersion, servingArtifact } from "#core/model.ts";
import type { ModelRunner } from "#core/runner.ts";
import { fromOrtResults, ortRunError, toOrtFeeds } from "#core/tensor/ort-tensors.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import type { ArtifactCache, LocalArtifact } from "./artifact-cache.ts";
import type { SessionPool } from "./session-pool.ts";

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

/** Runs models inside this function: artifact from the disk cache, session from the pool. */
export class OnnxRunner implements ModelRunner {
  readonly backend = "lambda" as const;
  readonly #artifacts: ArtifactCache;
  readonly #sessions: SessionPool<Ort.InferenceSession>;

  constructor(artifacts: ArtifactCache, sessions: SessionPool<Ort.InferenceSession>) {
    this.#artifacts = artifacts;
    this.#sessions = sessions;
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
  ): Promise<NamedTensor[]> {
    const artifact = servingArtifact(version);
    // Awaited rather than returned: an async function that returns a promise takes two more ticks.
    return await this.#sessions.use(
      artifact.sha256,
      artifact.bytes,
      () => this.#artifacts.load(artifact),
      async (session) => {
        // Loaded by now (the session exists): a cold start imports it while S3 starts the artifact.
        const feeds = toOrtFeeds(loadOrt(), inputs);
        let results: Ort.InferenceSession.OnnxValueMapType;
        try {
          // Every output, as most requests ask: onnxruntime's own default, without its name checks.
          results = await (outputs.length === session.outputNames.length
            ? session.run(feeds)
            : session.run(feeds, outputs as string[]));
        } catch (error) {
          // The full message rides as the cause: errorResponse logs it, the body gets the safe one.
          throw ortRunError(error);
        }
        return fromOrtResults(results, outputs);
      },
    );
  }
}
