import { Upload } from "@aws-sdk/lib-storage";
import { modelKey } from "#core/registry/manifest.ts";
import { buildMlpModel } from "../models/mlp.ts";
import { startBenchStack } from "./bench-stack.ts";
import { formatMs, median, printTable } from "./stats.ts";

const SAMPLES = Number(process.env.BENCH_PUBLISH_SAMPLES ?? 3);
const MODELS = [
  { label: "MLP ~10 MB", layers: [1024, 1280, 1024] },
  { label: "MLP ~200 MB", layers: [1024, 4096, 4096, 4096, 4096, 1024] },
];

const { stack, close } = await startBenchStack("publish", { demo: false });
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
  await close();
}
