import { createHash } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { buildIrisModel } from "./iris.ts";
import { buildMlpModel, MLP_50MB_LAYERS } from "./mlp.ts";
import { buildDatatypeZooModel, buildFixedShapeModel } from "./zoo.ts";

export const DEFAULT_MODELS_DIR = join(import.meta.dirname, "generated");

/** The demo and test models, by file name. */
export const MODEL_BUILDERS: Readonly<Record<string, () => Uint8Array>> = {
  "iris.onnx": buildIrisModel,
  "mlp-50mb.onnx": () => buildMlpModel({ layers: MLP_50MB_LAYERS, name: "mlp_50mb" }),
  "zoo.onnx": buildDatatypeZooModel,
  "fixed.onnx": buildFixedShapeModel,
};

export interface BuiltModel {
  readonly path: string;
  readonly bytes: number;
  readonly sha256: string;
  readonly buildMs: number;
}

/** Writes every model into `outDir` (created if missing) and reports what it wrote. */
export async function writeModels(outDir: string = DEFAULT_MODELS_DIR): Promise<BuiltModel[]> {
  await mkdir(outDir, { recursive: true });
  const built: BuiltModel[] = [];
  for (const [fileName, build] of Object.entries(MODEL_BUILDERS)) {
    const started = performance.now();
    const model = build();
    const buildMs = performance.now() - started;
    const path = join(outDir, fileName);
    await writeFile(path, model);
    built.push({
      path,
      bytes: model.byteLength,
      sha256: createHash("sha256").update(model).digest("hex"),
      buildMs,
    });
  }
  return built;
}

// Run only as a CLI (`tsx models/build.ts [outDir]`), so tests can import writeModels.
if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const outDir = process.argv[2] ? resolve(process.argv[2]) : DEFAULT_MODELS_DIR;
  for (const model of await writeModels(outDir)) {
    console.log(
      `${model.path}  ${model.bytes.toLocaleString("en-US").padStart(11)} bytes  ${model.buildMs.toFixed(0).padStart(5)} ms  sha256 ${model.sha256}`,
    );
  }
}
