import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll } from "vitest";
import { type Emulators, startEmulators } from "../../local/emulators.ts";

export const MODEL_BUCKET = "maas-models";

/** The local S3 emulator with the model bucket, for one test file: started before its tests, stopped after. */
export function useBucketEmulators(prefix: string): {
  readonly dataDir: string;
  readonly emulators: Emulators;
} {
  const started: { dataDir?: string; emulators?: Emulators } = {};
  beforeAll(async () => {
    started.dataDir = await mkdtemp(join(tmpdir(), `maas-${prefix}-`));
    started.emulators = await startEmulators({
      dataDir: started.dataDir,
      s3Port: 0,
      bucket: MODEL_BUCKET,
      table: "maas-registry",
      queues: [],
    });
  });
  afterAll(async () => {
    await started.emulators?.stop();
    if (started.dataDir) await rm(started.dataDir, { recursive: true, force: true });
  });
  return {
    get dataDir() {
      if (started.dataDir === undefined) throw new Error("the emulators have not started");
      return started.dataDir;
    },
    get emulators() {
      if (started.emulators === undefined) throw new Error("the emulators have not started");
      return started.emulators;
    },
  };
}
