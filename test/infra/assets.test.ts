import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  assetSizeReport,
  functionAssets,
  imageAssets,
  LAMBDA_UNZIPPED_LIMIT_BYTES,
} from "../../lib/asset-report.ts";
import { foreignBinaries, nativeBinaries } from "./binaries.ts";
import { maasStacks } from "./support.ts";

// The deployment's default architecture, arm64, with the SageMaker endpoint's image asset as well.
// The bundle smoke test covers x86_64.
const outdir = mkdtempSync(join(tmpdir(), "maas-assets-"));
const { app } = maasStacks({ bundle: true, outdir, context: { sagemaker: true } });
const assembly = app.synth();
const assets = functionAssets(assembly);
const images = imageAssets(assembly);
const byFunction = (name: string) => {
  const asset = assets.find((candidate) => candidate.path === `MaasService/${name}/Resource`);
  if (!asset) throw new Error(`no asset for ${name}`);
  return asset;
};

afterAll(() => rmSync(outdir, { recursive: true, force: true }));

describe("function assets (arm64)", () => {
  it("exist for inference, admin, register, optimize and jobs, and each stays under Lambda's 250 MB unzipped", () => {
    const { lines, oversized } = assetSizeReport(assets);
    console.log(`function assets, unzipped:\n${lines.map((line) => `  ${line}`).join("\n")}`);
    // The last is aws-cdk-lib's own BucketDeployment handler (the console's files): a few KB.
    expect(
      assets.map((asset) => asset.path.replace(/CDKBucketDeployment\w+/, "CDKBucketDeployment")).sort(),
    ).toEqual(
      [
        "MaasService/Admin/Resource",
        "MaasService/Inference/Resource",
        "MaasService/Jobs/Resource",
        "MaasService/Optimize/Resource",
        "MaasService/Register/Resource",
        "MaasService/Custom::CDKBucketDeployment/Resource",
      ].sort(),
    );
    expect(oversized).toEqual([]);
    for (const asset of assets) expect(asset.bytes).toBeLessThan(LAMBDA_UNZIPPED_LIMIT_BYTES);
  });

  it("carry no darwin, win32 or x64 binaries", () => {
    for (const asset of assets) expect(foreignBinaries(asset, "arm64"), asset.path).toEqual([]);
  });

  it("give inference, register, optimize and jobs onnxruntime's linux arm64 binding and library", () => {
    for (const name of ["Inference", "Register", "Optimize", "Jobs"]) {
      const binaries = nativeBinaries(byFunction(name), "arm64").filter((file) =>
        file.includes("onnxruntime"),
      );
      expect(binaries.sort()).toEqual([
        "node_modules/onnxruntime-node/bin/napi-v6/linux/arm64/libonnxruntime.so.1",
        "node_modules/onnxruntime-node/bin/napi-v6/linux/arm64/onnxruntime_binding.node",
      ]);
    }
  });

  it("give inference, register and jobs sharp with its linux arm64 binding and libvips, and no other function", () => {
    const sharpIn = (name: string) =>
      byFunction(name).files.filter(
        (file) => file.startsWith("node_modules/sharp/") || file.includes("/@img/"),
      );
    for (const name of ["Inference", "Register", "Jobs"]) {
      const asset = byFunction(name);
      expect(
        nativeBinaries(asset, "arm64")
          .filter((file) => file.includes("@img/"))
          .map((file) => file.replace(/\d+\.\d+\.\d+/g, "<version>"))
          .sort(),
      ).toEqual([
        "node_modules/@img/sharp-libvips-linux-arm64/lib/libvips-cpp.so.<version>",
        "node_modules/@img/sharp-linux-arm64/lib/sharp-linux-arm64-<version>.node",
      ]);
      expect(asset.files).toContain("node_modules/sharp/dist/index.mjs");
      // Imported on an image model's first request only: not compiled into the handler.
      expect(readFileSync(join(asset.directory, "index.mjs"), "utf8")).not.toContain("sharp-libvips");
    }
    for (const name of ["Optimize", "Admin"]) expect(sharpIn(name), name).toEqual([]);
  });

  it("keep onnxruntime out of the admin bundle, which never loads it", () => {
    expect([...byFunction("Admin").files].sort()).toEqual(["index.mjs", "index.mjs.map"]);
  });

  it("build the inference function's schemas with zod/mini: classic zod is not in its bundle", () => {
    // The classic API costs a cold start about 40 ms (README, cold path); one import of "zod" brings it back.
    const sourcesOf = (name: string) =>
      (
        JSON.parse(readFileSync(join(byFunction(name).directory, "index.mjs.map"), "utf8")) as {
          sources: string[];
        }
      ).sources;
    const zodIn = (name: string) => sourcesOf(name).filter((source) => source.includes("node_modules/zod/"));
    expect(zodIn("Inference").some((source) => source.includes("/zod/v4/mini/"))).toBe(true);
    expect(zodIn("Inference").filter((source) => source.includes("/zod/v4/classic/"))).toEqual([]);
    // The check can fail: the admin function still uses the classic API.
    expect(zodIn("Admin").some((source) => source.includes("/zod/v4/classic/"))).toBe(true);
  });
});

describe("the SageMaker serving image asset", () => {
  it("is a Docker image asset for linux/amd64 from containers/gpu/Dockerfile, not a Lambda asset", () => {
    expect(
      images.map(({ displayName, dockerFile, platform }) => ({ displayName, dockerFile, platform })),
    ).toEqual([
      { displayName: "SageMaker/Image", dockerFile: "containers/gpu/Dockerfile", platform: "linux/amd64" },
    ]);
    for (const asset of assets) expect(images[0]?.directory).not.toBe(asset.directory);
  });

  it("stages only what the Dockerfile copies: its .dockerignore allowlist, no node_modules", () => {
    const [image] = images;
    if (!image) throw new Error("no image asset");
    console.log(`SageMaker image build context: ${image.files.length} files, ${image.bytes} bytes`);
    expect(image.bytes).toBeLessThan(2 * 1024 * 1024);
    expect(image.files).toEqual(
      expect.arrayContaining([
        "containers/gpu/Dockerfile",
        "containers/gpu/Dockerfile.dockerignore",
        "containers/gpu/server.ts",
        "lambdas/aws/sagemaker/model-archive.ts",
        "lambdas/aws/onnx/session-worker.ts",
        "lambdas/core/model.ts",
        "package.json",
        "package-lock.json",
        "tsconfig.json",
      ]),
    );
    const outside = image.files.filter(
      (file) =>
        !/^(containers\/gpu\/|lambdas\/core\/|lambdas\/aws\/onnx\/|lambdas\/aws\/sagemaker\/model-archive\.ts$|package(-lock)?\.json$|tsconfig\.json$)/.test(
          file,
        ),
    );
    expect(outside).toEqual([]);
  });
});
