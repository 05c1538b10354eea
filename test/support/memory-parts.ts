import { Readable } from "node:stream";
import { Logger, type LogItem } from "@aws-lambda-powertools/logger";
import type { ArtifactSource } from "#aws/onnx/artifact-cache.ts";
import type { ArtifactRef } from "#core/model.ts";

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
