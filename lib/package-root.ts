import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

/** Where Node would find `name` from `fromDir` (its package directory, not its entry point). */
export function packageRoot(name: string, fromDir: string): string {
  const candidates = createRequire(join(fromDir, "noop.js")).resolve.paths(name) ?? [];
  const found = candidates.map((dir) => join(dir, name)).find((dir) => existsSync(join(dir, "package.json")));
  if (found === undefined) throw new Error(`cannot find ${name} from ${fromDir}; run npm install`);
  return found;
}
