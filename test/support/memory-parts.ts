import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { Logger, type LogItem } from "@aws-lambda-powertools/logger";
import { ArtifactCache, type ArtifactSource } from "#aws/onnx/artifact-cache.ts";
import { OnnxRunner, sessionOptions } from "#aws/onnx/runner.ts";
import { ServingArtifacts } from "#aws/onnx/serving-artifacts.ts";
import { SessionPool } from "#aws/onnx/session-pool.ts";
import { WorkerSession } from "#aws/onnx/worker-session.ts";
import type { ArtifactRef, ServableVersion } from "#core/model.ts";
import { inspectModel } from "#core/onnx/inspect.ts";

/** Artifact bytes by object key, streamed like an S3 GetObject body. */
export class MemoryArtifactSource implements ArtifactSource {
  readonly objects = new Map<string, Uint8Array>();

  async open(ref: ArtifactRef): Promise<Readable> {
    const bytes = this.objects.get(ref.key);
    if (bytes === undefined) throw new Error(`NoSuchKey: ${ref.key}`);
    return Readable.from([Buffer.from(bytes)]);
  }
}

/** Keeps each log line as the JSON object Powertools would print, instead of printing it. */
export class CapturingLogger extends Logger {
  readonly lines: Record<string, unknown>[] = [];

  protected override printLog(_logLevel: number, log: LogItem): void {
    this.lines.push(JSON.parse(JSON.stringify(log.getAttributes(), this.getJsonReplacer())));
  }
}

/** Stores `bytes` as version 1 of `name` and returns the ready record a registry would hold for it. */
export function storedVersion(
  artifacts: MemoryArtifactSource,
  name: string,
  bytes: Uint8Array,
): ServableVersion {
  const key = `models/${name}/1/model.onnx`;
  artifacts.objects.set(key, bytes);
  return {
    name,
    version: 1,
    status: "ready",
    target: "lambda",
    artifact: {
      bucket: "maas-models",
      key,
      sha256: createHash("sha256").update(bytes).digest("hex"),
      bytes: bytes.byteLength,
    },
    signature: inspectModel(bytes).signature,
    variants: [],
    createdAt: "2026-04-09T12:00:00.000Z",
    updatedAt: "2026-04-09T12:00:00.000Z",
  };
}

/**
 * The Lambda runner as the function builds it (sessions in worker threads, a disk cache under
 * `cacheDir`), over `artifacts`, with one intra-op thread and small budgets for tests.
 */
export function workerRunner(
  artifacts: MemoryArtifactSource,
  cacheDir: string,
  deadlineMs?: number,
): { runner: OnnxRunner; sessions: SessionPool<WorkerSession> } {
  const sessions = new SessionPool<WorkerSession>({
    create: (artifact) => WorkerSession.open(artifact, sessionOptions(1), { inline: true }),
    maxSessions: 4,
    maxBytes: 64 * 1024 * 1024,
    retryAfterMs: 1_000,
  });
  const cache = new ArtifactCache({ source: artifacts, directory: cacheDir, maxBytes: 64 * 1024 * 1024 });
  return { runner: new OnnxRunner(new ServingArtifacts(cache), sessions, deadlineMs), sessions };
}
