import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { App } from "aws-cdk-lib";
import { defineMaas, type MaasStacks } from "../../lib/maas-app.ts";
import { readMaasContext } from "../../lib/maas-context.ts";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** The feature flags of cdk.json, so that tests synthesize what `cdk synth` synthesizes. */
export const CDK_JSON_CONTEXT = (
  JSON.parse(readFileSync(join(ROOT, "cdk.json"), "utf8")) as {
    context: Record<string, unknown>;
  }
).context;

export interface TestAppOptions {
  /** Context keys as an operator would set them (cdk.json or -c). */
  readonly context?: Record<string, unknown>;
  /** Run esbuild and the onnxruntime copy; off, assets are placeholders (fast). @default false */
  readonly bundle?: boolean;
  /** Cloud assembly directory. @default a temporary directory of the App's choosing */
  readonly outdir?: string;
}

/** A test App for this project's stacks, configured like `cdk synth` (feature flags, asset metadata). */
export function testApp(options: TestAppOptions = {}): App {
  return new App({
    outdir: options.outdir,
    context: {
      ...CDK_JSON_CONTEXT,
      "aws:cdk:enable-path-metadata": true,
      "aws:cdk:enable-asset-metadata": true,
      ...(options.bundle ? {} : { "aws:cdk:bundling-stacks": [] }),
      ...options.context,
    },
  });
}

/** The app's stacks as bin/app.ts defines them, from context. */
export function maasStacks(options: TestAppOptions = {}): MaasStacks & { app: App } {
  const app = testApp(options);
  return { app, ...defineMaas(app, readMaasContext(app.node)) };
}
