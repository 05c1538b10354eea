import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "..", "..");
/** Folders that are not the project's source: generated, installed or tool state. */
const IGNORED = new Set(["node_modules", "cdk.out", "coverage", "dist"]);

function layoutSection(): string {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const start = readme.indexOf("## Repository layout");
  const end = readme.indexOf("\n## ", start + 1);
  if (start < 0) throw new Error("the README has no Repository layout section");
  return readme.slice(start, end);
}

function folders(dir: string, depth: number): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(join(ROOT, dir), { withFileTypes: true })) {
    if (!entry.isDirectory() || entry.name.startsWith(".") || IGNORED.has(entry.name)) continue;
    const path = dir ? `${dir}/${entry.name}` : entry.name;
    found.push(path);
    if (depth > 1) found.push(...folders(path, depth - 1));
  }
  return found;
}

describe("the README's repository layout", () => {
  const section = layoutSection();
  const named = [...section.matchAll(/`([a-z][a-z0-9./_-]*\/)`/g)].map((match) =>
    match[1]!.replace(/\/$/, ""),
  );
  it("names every top-level folder and every folder under lambdas/core and lambdas/aws", () => {
    const tree = [
      ...folders("", 1).filter((path) => path !== "lambdas" && path !== "shared"),
      ...folders("lambdas", 1).filter((path) => path !== "lambdas/core" && path !== "lambdas/aws"),
      "lambdas/core",
      ...folders("lambdas/core", 1),
      ...folders("lambdas/aws", 1),
      ...folders("containers", 1),
    ].filter((path) => path !== "containers");
    const listed = new Set([...named, "test"]);
    expect(tree.filter((path) => !listed.has(path))).toEqual([]);
  });

  it("names no folder that does not exist", () => {
    expect(named.filter((path) => !existsSync(join(ROOT, path)))).toEqual([]);
  });
});
