import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type CfnResource, Stack } from "aws-cdk-lib";
import { Template } from "aws-cdk-lib/assertions";
import { Architecture } from "aws-cdk-lib/aws-lambda";
import { afterAll, describe, expect, it } from "vitest";
import { type FunctionAsset, functionAssets } from "../../lib/asset-report.ts";
import { MaasFunction } from "../../lib/maas-function.ts";
import { ROOT, testApp } from "./support.ts";
import { permissionsOf, type TemplateResource } from "./template-helpers.ts";

const ENTRY = join(ROOT, "test/infra/fixtures/echo-handler.ts");
const outdir = mkdtempSync(join(tmpdir(), "maas-function-"));
const app = testApp({ bundle: true, outdir });
const stack = new Stack(app, "Functions");
const withDefaults = new MaasFunction(stack, "Defaults", { entry: ENTRY });
const customised = new MaasFunction(stack, "Custom", {
  entry: ENTRY,
  withOnnxRuntime: false,
  architecture: Architecture.X86_64,
  environment: { GREETING: "hello", NODE_OPTIONS: "--max-old-space-size=256" },
  bundling: {
    banner: "/* caller banner */",
    externalModules: ["left-pad"],
    commandHooks: {
      beforeBundling: () => [],
      beforeInstall: () => [],
      afterBundling: (_inputDir, outputDir) => [`echo caller > '${outputDir}/caller.txt'`],
    },
  },
});
const assembly = app.synth();
const template = Template.fromStack(stack);
const assets = functionAssets(assembly);

afterAll(() => rmSync(outdir, { recursive: true, force: true }));

function assetOf(fn: MaasFunction): FunctionAsset {
  const found = assets.find((asset) => asset.path === fn.node.defaultChild?.node.path);
  if (!found) throw new Error(`no asset for ${fn.node.path}`);
  return found;
}

function propsOf(fn: MaasFunction): Record<string, unknown> {
  const resources = template.findResources("AWS::Lambda::Function") as Record<string, TemplateResource>;
  return resources[stack.getLogicalId(fn.node.defaultChild as CfnResource)]?.Properties ?? {};
}

describe("MaasFunction defaults", () => {
  it("runs Node.js 22 on arm64 with 3008 MB, 4 GiB of /tmp and tracing, and leaves NODE_OPTIONS alone", () => {
    expect(propsOf(withDefaults)).toMatchObject({
      Runtime: "nodejs22.x",
      Architectures: ["arm64"],
      MemorySize: 3008,
      EphemeralStorage: { Size: 4096 },
      Timeout: 30,
      TracingConfig: { Mode: "Active" },
    });
    // Source maps are read when an error is logged, not loaded at start-up by --enable-source-maps.
    expect(propsOf(withDefaults).Environment).toBeUndefined();
  });

  it("bundles ESM with a require shim, a source map and onnxruntime-node for linux arm64 only", () => {
    const asset = assetOf(withDefaults);
    expect(readFileSync(join(asset.directory, "index.mjs"), "utf8")).toMatch(/^import \{ createRequire as /);
    expect(asset.files).toContain("index.mjs.map");
    const binaries = asset.files.filter((file) => file.includes("/bin/"));
    expect(binaries.length).toBeGreaterThan(0);
    for (const file of binaries)
      expect(file).toMatch(/^node_modules\/onnxruntime-node\/bin\/napi-v6\/linux\/arm64\//);
    expect(asset.files).toContain("node_modules/onnxruntime-common/package.json");
  });

  it("writes only to its own log group, kept a month, and sends traces", () => {
    const logGroup = stack.getLogicalId(withDefaults.logGroup.node.defaultChild as CfnResource);
    const role = stack.getLogicalId(withDefaults.role?.node.defaultChild as CfnResource);
    expect(permissionsOf(template, role)).toEqual([
      `logs:CreateLogStream <${logGroup}.Arn>`,
      `logs:PutLogEvents <${logGroup}.Arn>`,
      "xray:PutTelemetryRecords *",
      "xray:PutTraceSegments *",
    ]);
    const roleResource = (template.findResources("AWS::IAM::Role") as Record<string, TemplateResource>)[role];
    expect(roleResource?.Properties.ManagedPolicyArns).toBeUndefined();
    template.hasResourceProperties("AWS::Logs::LogGroup", { RetentionInDays: 30 });
  });
});

describe("MaasFunction merges what the caller gives", () => {
  it("keeps the caller's environment, NODE_OPTIONS included", () => {
    expect(propsOf(customised)).toMatchObject({
      Architectures: ["x86_64"],
      MemorySize: 512,
      EphemeralStorage: { Size: 512 },
      Environment: {
        Variables: { GREETING: "hello", NODE_OPTIONS: "--max-old-space-size=256" },
      },
    });
  });

  it("runs the caller's bundling hooks and banner, and ships no onnxruntime when told so", () => {
    const asset = assetOf(customised);
    expect(readFileSync(join(asset.directory, "caller.txt"), "utf8").trim()).toBe("caller");
    const bundle = readFileSync(join(asset.directory, "index.mjs"), "utf8");
    expect(bundle).toMatch(/^import \{ createRequire as /);
    expect(bundle).toContain("/* caller banner */");
    expect(existsSync(join(asset.directory, "node_modules"))).toBe(false);
  });
});
