import { availableParallelism } from "node:os";
import type * as Ort from "onnxruntime-node";
import type { ArtifactRef, ServableVersion } from "#core/model.ts";
import { DEFAULT_DEADLINE_MS, type ModelRunner, type RunOptions, type RunTimings } from "#core/runner.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import type { LocalArtifact } from "./artifact-cache.ts";
import { loadOrt } from "./ort.ts";
import { type ServingArtifacts, VariantUnavailableError } from "./serving-artifacts.ts";
import type { SessionPool } from "./session-pool.ts";
import { SessionLostError, type WorkerSession } from "./worker-session.ts";

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
  readonly #serving: ServingArtifacts;
  readonly #sessions: SessionPool<WorkerSession>;
  readonly #deadlineMs: number;

  /** `deadlineMs`: for runs whose caller gives no deadline (the service always does). */
  constructor(
    serving: ServingArtifacts,
    sessions: SessionPool<WorkerSession>,
    deadlineMs = DEFAULT_DEADLINE_MS,
  ) {
    this.#serving = serving;
    this.#sessions = sessions;
    this.#deadlineMs = deadlineMs;
  }

  /** What answers for the version: its selected variant, or the original while that variant is missing. */
  servedVariant(version: ServableVersion): string {
    return this.#serving.variant(version);
  }

  async load(version: ServableVersion): Promise<void> {
    await this.#withSession(version, async () => {}, undefined);
  }

  async run(
    version: ServableVersion,
    inputs: readonly NamedTensor[],
    outputs: readonly string[],
    options: RunOptions = {},
  ): Promise<NamedTensor[]> {
    const deadline = options.deadline ?? Date.now() + this.#deadlineMs;
    const timings = options.timings;
    const run = (session: WorkerSession) => session.run(inputs, outputs, deadline, timings);
    try {
      // Awaited rather than returned: an async function that returns a promise takes two more ticks.
      return await this.#withSession(version, run, timings);
    } catch (error) {
      // Queued behind a run that passed its deadline (or a worker that died): once more, on a new session.
      if (!(error instanceof SessionLostError)) throw error;
      return await this.#withSession(version, run, timings);
    }
  }

  /** `work` on the session of what serves the version; the original's when a selected variant is gone. */
  async #withSession<T>(
    version: ServableVersion,
    work: (session: WorkerSession) => Promise<T>,
    timings: RunTimings | undefined,
  ): Promise<T> {
    try {
      return await this.#use(version, this.#serving.ref(version), work, timings);
    } catch (error) {
      if (!(error instanceof VariantUnavailableError)) throw error;
      return await this.#use(version, this.#serving.ref(version), work, timings);
    }
  }

  /**
   * `timings`, when given, gets the artifact's fetch and the session's creation if this call loads the
   * version (the pool calls `locate` only then): creation is the time from the artifact to the session.
   */
  #use<T>(
    version: ServableVersion,
    ref: ArtifactRef,
    work: (session: WorkerSession) => Promise<T>,
    timings: RunTimings | undefined,
  ) {
    let located = 0;
    return this.#sessions.use(
      ref.sha256,
      ref.bytes,
      timings === undefined
        ? () => this.#serving.load(version, ref)
        : async () => {
            const started = performance.now();
            try {
              return await this.#serving.load(version, ref);
            } finally {
              located = performance.now();
              timings.artifactFetchUs += (located - started) * 1000;
              timings.spans?.push({ name: "artifact fetch", start: started, end: located });
            }
          },
      async (session) => {
        if (located !== 0 && timings !== undefined) {
          const created = performance.now();
          timings.sessionCreateUs += (created - located) * 1000;
          timings.spans?.push({ name: "session create", start: located, end: created });
        }
        try {
          return await work(session);
        } finally {
          // A session whose run passed its deadline is gone with its worker: the next run makes another.
          if (session.lost) void this.#sessions.discard(ref.sha256, session);
        }
      },
    );
  }
}
