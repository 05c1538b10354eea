import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { assetSizeReport, functionAssets, LAMBDA_UNZIPPED_LIMIT_BYTES } from "../../lib/asset-report.ts";
import { foreignBinaries, nativeBinaries } from "./binaries.ts";
import { maasStacks } from "./support.ts";

// The deployment's default: arm64. The bundle smoke test covers x86_64.
const outdir = mkdtempSync(join(tmpdir(), "maas-assets-"));
const { app } = maasStacks({ bundle: true, outdir });
const assets = functionAssets(app.synth());
const byFunction = (name: string) => {
  const asset = assets.find((candidate) => candidate.path === `MaasService/${name}/Resource`);
  if (!asset) throw new Error(`no asset for ${name}`);
  return asset;
};

afterAll(() => rmSync(outdir, { recursive: true, force: true }));

describe("function assets (arm64)", () => {
  it("exist for inference, admin and register, and each stays under Lambda's 250 MB unzipped", () => {
    const { lines, oversized } = assetSizeReport(assets);
    console.log(`function assets, unzipped:\n${lines.map((line) => `  ${line}`).join("\n")}`);
    expect(assets.map((asset) => asset.path).sort()).toEqual([
      "MaasService/Admin/Resource",
      "MaasService/Inference/Resource",
      "MaasService/Register/Resource",
    ]);
    expect(oversized).toEqual([]);
    for (const asset of assets) expect(asset.bytes).toBeLessThan(LAMBDA_UNZIPPED_LIMIT_BYTES);
  });

  it("carry no darwin, win32 or x64 binaries", () => {
    for (const asset of assets) expect(foreignBinaries(asset, "arm64"), asset.path).toEqual([]);
  });

  it("give inference and register onnxruntime's linux arm64 binding and library", () => {
    for (const name of ["Inference", "Register"]) {
      expect(nativeBinaries(byFunction(name), "arm64").sort()).toEqual([
        "node_modules/onnxruntime-node/bin/napi-v6/linux/arm64/libonnxruntime.so.1",
        "node_modules/onnxruntime-node/bin/napi-v6/linux/arm64/onnxruntime_binding.node",
      ]);
    }
  });

  it("keep onnxruntime out of the admin bundle, which never loads it", () => {
    expect([...byFunction("Admin").files].sort()).toEqual(["index.mjs", "index.mjs.map"]);
  });
});
