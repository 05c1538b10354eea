import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { packageRoot } from "./package-root.ts";

/**
 * The packages an image task function needs of sharp (issue 19), for one Lambda architecture: sharp's
 * JavaScript and its small dependencies, its linux binding and libvips. sharp installs only this
 * machine's binaries; another architecture's (arm64 when synthesizing on x64, say) are fetched once from
 * the npm registry with `npm pack` and kept under node_modules/.cache, as AWS's guidance for sharp on
 * Lambda does with `npm install --cpu`.
 */
export interface SharpPackage {
  /** Its name under node_modules, e.g. `@img/sharp-linux-arm64`. */
  readonly name: string;
  /** The package directory on this machine. */
  readonly dir: string;
  /** What of it the asset takes: the package's own files, not its sources or headers. */
  readonly files: readonly string[];
}

export function sharpPackages(fromDir: string, arch: "x64" | "arm64"): SharpPackage[] {
  const sharp = packageRoot("sharp", fromDir);
  const manifest = readManifest(sharp);
  const dependencies = Object.keys(manifest.dependencies ?? {}).map((name) => {
    const dir = packageRoot(name, sharp);
    const own = readManifest(dir);
    if (Object.keys(own.dependencies ?? {}).length > 0)
      throw new Error(`sharp's dependency ${name} has dependencies of its own; copy them too`);
    return { name, dir, files: ["."] };
  });
  const binaries = [`@img/sharp-linux-${arch}`, `@img/sharp-libvips-linux-${arch}`].map((name) => {
    const version = manifest.optionalDependencies?.[name];
    if (version === undefined) throw new Error(`sharp ${manifest.version} has no ${name} package`);
    const dir = platformPackageDir(name, version, sharp);
    return {
      name,
      dir,
      files: name.includes("libvips") ? ["package.json", "lib/index.js", "lib/libvips-cpp.so*"] : ["."],
    };
  });
  return [{ name: "sharp", dir: sharp, files: ["package.json", "dist"] }, ...dependencies, ...binaries];
}

interface PackageManifest {
  readonly version: string;
  readonly dependencies?: Record<string, string>;
  readonly optionalDependencies?: Record<string, string>;
}

function readManifest(dir: string): PackageManifest {
  return JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as PackageManifest;
}

/** The installed package if it is this version (this machine's platform), else a cached `npm pack` of it. */
function platformPackageDir(name: string, version: string, sharpDir: string): string {
  const installed = join(dirname(sharpDir), name);
  if (existsSync(join(installed, "package.json")) && readManifest(installed).version === version)
    return installed;
  const cached = join(dirname(sharpDir), ".cache", "maas-sharp", `${name.replace("/", "+")}-${version}`);
  if (existsSync(join(cached, "package.json"))) return cached;
  const work = mkdtempSync(join(tmpdir(), "maas-sharp-"));
  try {
    const tarball = execFileSync(
      "npm",
      ["pack", `${name}@${version}`, "--silent", "--pack-destination", work],
      {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "inherit"],
      },
    )
      .trim()
      .split("\n")
      .at(-1) as string;
    const unpacked = join(work, "package");
    mkdirSync(unpacked);
    execFileSync("tar", ["-xzf", join(work, tarball), "-C", unpacked, "--strip-components=1"]);
    mkdirSync(dirname(cached), { recursive: true });
    renameSync(unpacked, cached);
    return cached;
  } catch (error) {
    throw new Error(
      `sharp's ${name}@${version} (image tasks on linux) is not installed here and npm pack could not fetch it: ${(error as Error).message}`,
    );
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
