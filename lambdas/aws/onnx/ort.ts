import { createRequire } from "node:module";
import type * as Ort from "onnxruntime-node";

/** The module once loaded, or the error its load threw, which every later call throws again. */
let ortLoad: { readonly ort: typeof Ort } | { readonly error: unknown } | undefined;

/**
 * Loads onnxruntime-node on this thread, on first use: registration's and the optimizer's sessions,
 * and the inference function's inline runs (inline-runs.ts). The inference function's sessions load
 * it in their worker threads (worker-session.ts).
 *
 * Through CommonJS `require`, which is what the package is: import() would take each of its files
 * through the ESM loader's translation, about 10 ms more of the same block on the build machine. A
 * load that fails is kept, and thrown to every caller.
 */
export function loadOrt(): typeof Ort {
  if (ortLoad === undefined) {
    try {
      ortLoad = { ort: createRequire(import.meta.url)("onnxruntime-node") as typeof Ort };
    } catch (error) {
      ortLoad = { error };
    }
  }
  if ("error" in ortLoad) throw ortLoad.error;
  return ortLoad.ort;
}
