/**
 * `npm run bench:publish`: upload-to-servable through the local stack, for a ~10 MB and a ~200 MB
 * model. The baseline, measured in the same run, is the S3 upload of the same bytes alone (to a key
 * nothing watches); the ratio says how much registration adds on top of moving the bytes.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Upload } from "@aws-sdk/lib-storage";
import { modelKey } from "#core/registry/manifest.ts";
import { startLocalStack } from "../local/stack.ts";
import { buildMlpModel } from "../models/mlp.ts";
import { formatMs, median, printTable } from "./stats.ts";

const SAMPLES = Number(process.env.BENCH_PUBLISH_SAMPLES ?? 3);
const MODELS = [
  { label: "MLP ~10 MB", layers: [1024, 1280, 1024] },
  { label: "MLP ~200 MB", layers: [1024, 4096, 4096, 4096, 4096, 1024] },
];

const dataDir = await mkdtemp(join(tmpdir(), "maas-bench-publish-"));
const stack = await startLocalStack({
  dataDir,
  port: 0,
  s3Port: 0,
  apiKey: "bench-key-1",
  adminKey: "bench-admin-1",
  logLevel: "SILENT",
  demo: false,
});
const s3 = stack.emulators.s3Client();
const upload = (key: string, body: Uint8Array) =>
  new Upload({
    client: s3,
    params: { Bucket: stack.bucket, Key: key, Body: body },
    partSize: 8 * 1024 * 1024,
  }).done();

async function servable(name: string, version: number, deadline: number): Promise<void> {
  for (;;) {
    const response = await fetch(`${stack.url}/v2/models/${name}/versions/${version}/ready`, {
      headers: { "x-api-key": "bench-key-1" },
    });
    if (response.status === 200) return;
    if (Date.now() > deadline) throw new Error(`${name} v${version} not servable: ${await response.text()}`);
    await new Promise((wake) => setTimeout(wake, 10));
  }
}

try {
  const rows: string[][] = [];
  for (const [index, model] of MODELS.entries()) {
    const bytes = buildMlpModel({ layers: model.layers, seed: 7 });
    const name = `bench-${index}`;
    const uploads: number[] = [];
    const totals: number[] = [];
    for (let sample = 1; sample <= SAMPLES; sample++) {
      let started = performance.now();
      await upload(`bench-baseline/${name}/${sample}.onnx`, bytes);
      uploads.push(performance.now() - started);

      // Different bytes per version (one changed doc byte would do; the seed does it honestly).
      const versionBytes = sample === 1 ? bytes : buildMlpModel({ layers: model.layers, seed: 7 + sample });
      started = performance.now();
      await upload(modelKey(name, sample), versionBytes);
      await servable(name, sample, Date.now() + 120_000);
      totals.push(performance.now() - started);
    }
    const upload50 = median(uploads);
    const total50 = median(totals);
    rows.push([
      `${model.label} (${(bytes.byteLength / 1e6).toFixed(1)} MB)`,
      formatMs(upload50),
      formatMs(total50),
      formatMs(total50 - upload50),
      (total50 / upload50).toFixed(2),
    ]);
  }
  console.log(`upload to servable through the local stack: median of ${SAMPLES} versions each\n`);
  printTable(["model", "S3 upload alone ms", "upload to servable ms", "registration adds ms", "ratio"], rows);
} finally {
  await stack.close();
  await rm(dataDir, { recursive: true, force: true });
}
