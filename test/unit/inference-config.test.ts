import { describe, expect, it } from "vitest";
import { loadInferenceConfig } from "#lambdas/inference/config.ts";

const MiB = 1024 * 1024;
const base = { MAAS_REGISTRY_TABLE: "registry" };

describe("inference function configuration", () => {
  it("sizes the session budget and in-memory downloads from the function's memory", () => {
    const config = loadInferenceConfig({ ...base, AWS_LAMBDA_FUNCTION_MEMORY_SIZE: "3008" });

    expect(config.MAAS_SESSION_BYTES).toBe(1504 * MiB);
    expect(config.MAAS_ARTIFACT_MEMORY_BYTES).toBe(376 * MiB);
  });

  it("streams every download to disk when in-memory downloads are set to 0", () => {
    const config = loadInferenceConfig({ ...base, MAAS_ARTIFACT_MEMORY_BYTES: "0" });

    expect(config.MAAS_ARTIFACT_MEMORY_BYTES).toBe(0);
  });

  it("takes explicit sizes, in-memory downloads included", () => {
    const config = loadInferenceConfig({
      ...base,
      MAAS_SESSION_BYTES: String(100 * MiB),
      MAAS_ARTIFACT_MEMORY_BYTES: String(64 * MiB),
    });

    expect(config.MAAS_SESSION_BYTES).toBe(100 * MiB);
    expect(config.MAAS_ARTIFACT_MEMORY_BYTES).toBe(64 * MiB);
  });

  it("fails loudly on a size that is not a whole number of bytes", () => {
    expect(() => loadInferenceConfig({ ...base, MAAS_ARTIFACT_MEMORY_BYTES: "-1" })).toThrow(
      /MAAS_ARTIFACT_MEMORY_BYTES/,
    );
    expect(() => loadInferenceConfig({ ...base, MAAS_ARTIFACT_MEMORY_BYTES: "lots" })).toThrow(
      /MAAS_ARTIFACT_MEMORY_BYTES/,
    );
  });
});
