import { readFileSync } from "node:fs";
import { SourceMap } from "node:module";
import { fileURLToPath } from "node:url";

/**
 * Stack traces mapped to the TypeScript source when an error is logged, not when the function starts.
 *
 * The functions ship their bundle's source map but run without `--enable-source-maps`: with it, Node
 * reads and indexes every map as its module loads (the bundle's and onnxruntime's) on every cold
 * start, for traces that only an unexpected error needs (README, cold path, for what dropping it
 * measured). Here a map is read on the first error that has a frame in its file, and kept.
 */

/** `    at name (file:///var/task/index.mjs:1:2345)` or `    at file:///var/task/index.mjs:1:2345` */
const FRAME = /^(\s+at (?:.*\()?)((?:file:\/\/)?\/[^():]+):(\d+):(\d+)(\)?)$/;

/** Parsed maps by generated file, and `null` for files that have none (or none that parses). */
const maps = new Map<string, SourceMap | null>();

/**
 * Replaces the error's stack, and its causes' stacks, with frames in the original sources where the
 * generated file has a `.map` beside it; other frames are left as they are. Returns the same error.
 * Mapping a mapped stack changes nothing.
 */
export function withSourceMappedStack<T>(error: T): T {
  for (let current: unknown = error, depth = 0; current instanceof Error && depth < 8; depth++) {
    if (typeof current.stack === "string") current.stack = sourceMappedStack(current.stack);
    current = current.cause;
  }
  return error;
}

export function sourceMappedStack(stack: string): string {
  return stack
    .split("\n")
    .map((line) => {
      const frame = FRAME.exec(line);
      if (frame === null) return line;
      const [, head = "", file = "", lineText = "", columnText = "", tail = ""] = frame;
      const map = mapFor(file);
      const origin = map?.findOrigin(Number(lineText), Number(columnText));
      if (origin === undefined || !("fileName" in origin)) return line;
      return `${head}${sourcePath(origin.fileName)}:${origin.lineNumber}:${origin.columnNumber}${tail}`;
    })
    .join("\n");
}

function mapFor(file: string): SourceMap | null {
  let map = maps.get(file);
  if (map !== undefined) return map;
  map = null;
  try {
    const path = file.startsWith("file://") ? fileURLToPath(file) : file;
    map = new SourceMap(JSON.parse(readFileSync(`${path}.map`, "utf8")));
  } catch {
    // no map beside the file, or not one Node can read: its frames stay as they are
  }
  maps.set(file, map);
  return map;
}

/**
 * The source as the map names it, relative to where the bundle was built (`../../lambdas/aws/x.ts`),
 * without the leading `../`: `lambdas/aws/x.ts`, `node_modules/zod/...`.
 */
function sourcePath(source: string): string {
  return source.replace(/^(?:\.\.?\/)+/, "");
}
