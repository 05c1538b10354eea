import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import type { Logger } from "@aws-lambda-powertools/logger";
import { build } from "esbuild";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { errorResponse } from "#aws/lambda/api-gateway.ts";
import { sourceMappedStack, withSourceMappedStack } from "#aws/lambda/stack-map.ts";

/** Line 4, column 9 is `new Error`; line 8, column 11 the `throw` of the wrapper. */
const SOURCE = `export function explode(): never {
  const reason: string = ["bo", "om"].join("");
  // the throw below is line 4
  throw new Error(reason);
}

export function wrap(): never {
  try { explode(); } catch (cause) { throw new Error("wrapped", { cause }); }
}
`;

let dir: string;
let bundle: { explode(): never; wrap(): never };
let bundlePath: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "maas-stack-map-"));
  await mkdir(join(dir, "src"));
  await writeFile(join(dir, "src", "thrower.ts"), SOURCE);
  bundlePath = join(dir, "out", "thrower.mjs");
  // As the functions are bundled: minified, one line, with a map beside it. The map is not linked from
  // the bundle, or vitest's own stack handling would follow the link and map the frames itself.
  await build({
    entryPoints: [join(dir, "src", "thrower.ts")],
    bundle: true,
    format: "esm",
    platform: "node",
    minify: true,
    sourcemap: "external",
    sourcesContent: false,
    outfile: bundlePath,
    logLevel: "error",
  });
  bundle = await import(pathToFileURL(bundlePath).href);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function thrown(fn: () => never): Error {
  try {
    fn();
  } catch (error) {
    return error as Error;
  }
  throw new Error("did not throw");
}

function firstFrame(stack: string | undefined): string {
  return stack?.split("\n").find((line) => line.trimStart().startsWith("at ")) ?? "";
}

describe("withSourceMappedStack", () => {
  it("maps frames in a minified bundle to the original file, line and column", () => {
    const error = thrown(() => bundle.explode());
    expect(firstFrame(error.stack)).toContain("out/thrower.mjs:1:");
    withSourceMappedStack(error);
    expect(firstFrame(error.stack)).toMatch(/\(src\/thrower\.ts:4:9\)$/);
    expect(error.stack?.split("\n")[0]).toBe("Error: boom");
  });

  it("maps the causes too, and changes nothing when mapped again", () => {
    const error = thrown(() => bundle.wrap());
    withSourceMappedStack(error);
    expect(firstFrame(error.stack)).toMatch(/\(src\/thrower\.ts:8:\d+\)$/);
    expect(firstFrame((error.cause as Error).stack)).toMatch(/\(src\/thrower\.ts:4:9\)$/);
    const once = error.stack;
    withSourceMappedStack(error);
    expect(error.stack).toBe(once);
  });

  it("leaves frames alone in files without a map, or with one that does not parse", async () => {
    const noMap = `Error: x\n    at run (${join(dir, "plain.mjs")}:3:7)\n    at node:internal/process/task_queues:95:5`;
    expect(sourceMappedStack(noMap)).toBe(noMap);
    const broken = join(dir, "broken.mjs");
    await writeFile(broken, "export {};\n");
    await writeFile(`${broken}.map`, "{ not json");
    const brokenStack = `Error: y\n    at ${pathToFileURL(broken).href}:1:1`;
    expect(sourceMappedStack(brokenStack)).toBe(brokenStack);
  });

  it("passes non-errors through untouched", () => {
    expect(withSourceMappedStack("text")).toBe("text");
    expect(withSourceMappedStack(undefined)).toBeUndefined();
  });
});

describe("errorResponse", () => {
  it("logs an unexpected error with its stack in the original source", () => {
    const error = vi.fn();
    const response = errorResponse(
      thrown(() => bundle.explode()),
      { error } as unknown as Logger,
    );
    expect(response.statusCode).toBe(500);
    const logged = error.mock.calls[0]?.[1] as Error;
    expect(firstFrame(logged.stack)).toMatch(/\(src\/thrower\.ts:4:9\)$/);
  });
});
