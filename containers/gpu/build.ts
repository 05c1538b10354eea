/**
 * Compiles the container server into one ES module, onnxruntime-node left external (it is installed
 * in the image with its CUDA binaries). Used by the Dockerfile and by the test that runs the bundle.
 *
 *   tsx containers/gpu/build.ts <outfile>
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { build, type Metafile } from "esbuild";
import { SESSION_WORKER_BUNDLE, SESSION_WORKER_SOURCE } from "#aws/onnx/session-protocol.ts";

export const ENTRY_POINT = resolve(import.meta.dirname, "main.ts");

/**
 * Bundles the server to `outfile` and the session worker beside it. Returns esbuild's metafiles'
 * inputs: which sources went into the bundles.
 */
export async function bundleGpuServer(outfile: string): Promise<Metafile["inputs"]> {
  const worker = await build({
    entryPoints: [fileURLToPath(SESSION_WORKER_SOURCE)],
    outfile: join(dirname(outfile), SESSION_WORKER_BUNDLE),
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node22",
    external: ["onnxruntime-node"],
    legalComments: "none",
    logLevel: "warning",
    metafile: true,
  });
  const result = await build({
    entryPoints: [ENTRY_POINT],
    outfile,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node22",
    external: ["onnxruntime-node"],
    sourcemap: "linked",
    legalComments: "none",
    logLevel: "warning",
    metafile: true,
    // The ES module builds of dependencies (the AWS SDK ships both) where there are some...
    mainFields: ["module", "main"],
    // ...and a require() for the CommonJS ones that remain.
    banner: {
      js: "import { createRequire as __maasCreateRequire } from 'node:module'; const require = __maasCreateRequire(import.meta.url);",
    },
  });
  return { ...result.metafile.inputs, ...worker.metafile.inputs };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const outfile = process.argv[2];
  if (!outfile) throw new Error("usage: tsx containers/gpu/build.ts <outfile>");
  await bundleGpuServer(resolve(outfile));
}
