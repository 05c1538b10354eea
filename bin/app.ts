import { App, Validations } from "aws-cdk-lib";
import {
  assetSizeReport,
  formatMiB,
  functionAssets,
  imageAssets,
  LAMBDA_UNZIPPED_LIMIT_BYTES,
} from "../lib/asset-report.ts";
import { defineMaas } from "../lib/maas-app.ts";
import { readMaasContext } from "../lib/maas-context.ts";
import { nagPacks } from "../lib/nag.ts";

const app = new App();
defineMaas(app, readMaasContext(app.node), {
  account: process.env.CDK_DEFAULT_ACCOUNT,
  region: process.env.CDK_DEFAULT_REGION,
});
// Every synth and deploy runs the rule packs; an unacknowledged finding stops it.
Validations.of(app).addPlugins(...nagPacks(app));
const assembly = app.synth();

// stderr: `cdk synth` prints the template on stdout.
const { lines, oversized } = assetSizeReport(functionAssets(assembly));
if (lines.length > 0)
  process.stderr.write(`Lambda assets (unzipped):\n${lines.map((line) => `  ${line}\n`).join("")}`);
const images = imageAssets(assembly);
if (images.length > 0) {
  // The build context staged in cdk.out; the image itself is built when `cdk deploy` publishes it.
  const imageLines = images.map(
    (image) =>
      `  ${image.displayName.padEnd(36)} ${formatMiB(image.bytes).padStart(11)}  ${image.files.length} files (${image.dockerFile}, ${image.platform ?? "default platform"})\n`,
  );
  process.stderr.write(`Docker build contexts (staged; built at deploy):\n${imageLines.join("")}`);
}
if (oversized.length > 0) {
  throw new Error(
    `over Lambda's ${LAMBDA_UNZIPPED_LIMIT_BYTES} bytes unzipped: ${oversized.map((asset) => asset.path).join(", ")}`,
  );
}
