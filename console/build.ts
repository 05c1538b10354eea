/**
 * Builds the web console with esbuild: the Preact app and its CSS bundled, minified and content-hashed,
 * and index.html pointing at them. Nothing is fetched at run time from anywhere but the page's origin.
 *
 *   const { files, jsGzipBytes } = await buildConsole(".maas/console");
 */
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { basename, join, relative, resolve } from "node:path";
import { gzipSync } from "node:zlib";
import { build, type Metafile } from "esbuild";

const CONSOLE_DIR = import.meta.dirname;
const ENTRY = join(CONSOLE_DIR, "src", "main.tsx");
const ASSETS_MARKER = "<!-- assets -->";

export interface ConsoleBuild {
  /** Every file written, relative to the output folder, index.html first. */
  readonly files: string[];
  /** The JavaScript a first load fetches (the entry and the chunks it imports statically), gzipped. */
  readonly jsGzipBytes: number;
}

/** The output files a first load fetches: the entry's static imports, transitively (lazy chunks excluded). */
function firstLoadScripts(metafile: Metafile, entryOutput: string): string[] {
  const loaded = new Set<string>();
  const visit = (output: string) => {
    if (loaded.has(output)) return;
    loaded.add(output);
    for (const imported of metafile.outputs[output]?.imports ?? []) {
      if (imported.kind === "import-statement" && !imported.external) visit(imported.path);
    }
  };
  visit(entryOutput);
  return [...loaded];
}

/** Empties `outDir` and writes the console into it. */
export async function buildConsole(target: string): Promise<ConsoleBuild> {
  const outDir = resolve(target);
  await rm(outDir, { recursive: true, force: true });
  await mkdir(outDir, { recursive: true });
  const result = await build({
    entryPoints: [ENTRY],
    outdir: outDir,
    bundle: true,
    minify: true,
    format: "esm",
    // aws4fetch (AWS sign-in only) becomes a chunk of its own, fetched when first used.
    splitting: true,
    target: ["es2022", "chrome111", "firefox113", "safari16.4"],
    jsx: "automatic",
    jsxImportSource: "preact",
    entryNames: "[name]-[hash]",
    chunkNames: "chunk-[hash]",
    assetNames: "[name]-[hash]",
    legalComments: "eof",
    metafile: true,
    logLevel: "silent",
    absWorkingDir: CONSOLE_DIR,
  });
  const outputs = Object.entries(result.metafile.outputs);
  const entry = outputs.find(
    ([, output]) => output.entryPoint !== undefined && output.cssBundle !== undefined,
  );
  const [entryJs, entryOutput] = entry ?? outputs.find(([, output]) => output.entryPoint !== undefined) ?? [];
  if (entryJs === undefined || entryOutput === undefined) throw new Error("esbuild wrote no entry script");
  const name = (output: string) => relative(outDir, join(CONSOLE_DIR, output));
  const css = entryOutput.cssBundle === undefined ? [] : [name(entryOutput.cssBundle)];

  const template = await readFile(join(CONSOLE_DIR, "index.html"), "utf8");
  if (!template.includes(ASSETS_MARKER)) throw new Error(`console/index.html has no ${ASSETS_MARKER} line`);
  const tags = [
    ...css.map((file) => `<link rel="stylesheet" href="${file}" />`),
    `<script type="module" src="${name(entryJs)}"></script>`,
  ].join("\n    ");
  await writeFile(join(outDir, "index.html"), template.replace(ASSETS_MARKER, tags));

  let jsGzipBytes = 0;
  for (const output of firstLoadScripts(result.metafile, entryJs)) {
    jsGzipBytes += gzipSync(await readFile(join(CONSOLE_DIR, output))).length;
  }
  const written = outputs.map(([output]) => name(output)).filter((file) => !file.endsWith(".map"));
  return { files: ["index.html", ...written.filter((file) => basename(file) !== "index.html")], jsGzipBytes };
}
