import { createReadStream } from "node:fs";
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { extractModelArchive } from "#aws/sagemaker/model-archive.ts";
import { ModelNotFoundError } from "#core/errors.ts";

const ARCHIVE_SUFFIX = /\.(tar\.gz|tgz)$/;
/** A TargetModel is a relative path under the model prefix: no absolute paths, no `..`. */
const SAFE_TARGET = /^(?!\/)(?!.*(^|\/)\.\.(\/|$))[\w.\-/]{1,1024}$/;

/** A target's name without its archive suffix: the directory SageMaker extracts it into. */
export function targetStem(target: string): string {
  return target.replace(ARCHIVE_SUFFIX, "");
}

async function isFile(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isFile() ?? false;
}

async function isDirectory(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() ?? false;
}

/** The model file in a directory SageMaker prepared: `model.onnx`, or its only `.onnx` file. */
export async function findModelFile(directory: string): Promise<string> {
  const preferred = join(directory, "model.onnx");
  if (await isFile(preferred)) return preferred;
  const entries = await readdir(directory).catch(() => undefined);
  if (entries === undefined) throw new ModelNotFoundError(`model directory ${directory} does not exist`);
  const models = entries.filter((entry) => entry.endsWith(".onnx"));
  if (models.length === 1) return join(directory, models[0]!);
  throw new ModelNotFoundError(
    models.length === 0
      ? `no .onnx file in ${directory}`
      : `${directory} holds ${models.length} .onnx files and no model.onnx`,
  );
}

/** Downloads the archive named `target` to `file`; false if there is no such archive. */
export type FetchArchive = (target: string, file: string) => Promise<boolean>;

/**
 * Finds the model file for a target (the X-Amzn-SageMaker-Target-Model of a request) in the model
 * directories, in the layouts SageMaker leaves: an extracted archive `<dir>/<stem>/model.onnx`, the
 * archive itself `<dir>/<target>` (extracted here once), or a bare `<dir>/<target>.onnx`. With no
 * target, the single model of a single-model endpoint: `/opt/ml/model/model.onnx`. Given
 * `fetchArchive`, an archive found nowhere is downloaded (the model prefix in S3) and extracted.
 */
export class ModelLocator {
  readonly #directories: readonly string[];
  readonly #scratch: string;
  readonly #fetchArchive: FetchArchive | undefined;
  readonly #extracting = new Map<string, Promise<string>>();

  constructor(directories: readonly string[], scratch: string, fetchArchive?: FetchArchive) {
    this.#directories = directories;
    this.#scratch = scratch;
    this.#fetchArchive = fetchArchive;
  }

  async locate(target: string | undefined): Promise<string> {
    if (target === undefined) return this.#locateSingle();
    if (!SAFE_TARGET.test(target)) throw new ModelNotFoundError(`'${target}' is not a valid target model`);
    const stem = targetStem(target);
    for (const directory of this.#directories) {
      if (await isDirectory(join(directory, stem))) {
        try {
          return await findModelFile(join(directory, stem));
        } catch {
          // an unrelated directory of that name: keep looking
        }
      }
      const direct = join(directory, target);
      if (ARCHIVE_SUFFIX.test(target) && (await isFile(direct))) return this.#extract(stem, direct);
      if (target.endsWith(".onnx") && (await isFile(direct))) return direct;
    }
    const fetchArchive = this.#fetchArchive;
    if (fetchArchive !== undefined && ARCHIVE_SUFFIX.test(target)) {
      return this.#extract(stem, async (partial) => {
        await mkdir(this.#scratch, { recursive: true });
        const archive = `${partial}.tar.gz`;
        try {
          if (!(await fetchArchive(target, archive))) {
            throw new ModelNotFoundError(`target model '${target}' is not in the model prefix`);
          }
          await extractModelArchive(createReadStream(archive), partial);
        } finally {
          await rm(archive, { force: true });
        }
      });
    }
    throw new ModelNotFoundError(`target model '${target}' is not in ${this.#directories.join(" or ")}`);
  }

  async #locateSingle(): Promise<string> {
    for (const directory of this.#directories) {
      try {
        return await findModelFile(directory);
      } catch {
        // try the next layout
      }
    }
    throw new ModelNotFoundError(
      "no target model was named (X-Amzn-SageMaker-Target-Model) and no single model is in the model directory",
    );
  }

  /** Extracts an archive into the scratch directory once; concurrent callers share the work. */
  #extract(stem: string, fill: string | ((partial: string) => Promise<void>)): Promise<string> {
    const destination = join(this.#scratch, stem.replaceAll("/", "__"));
    let extracting = this.#extracting.get(destination);
    if (extracting === undefined) {
      extracting = (async () => {
        if (await isDirectory(destination)) return findModelFile(destination);
        // Into a temporary directory first, so a crash midway never leaves a half model behind.
        const partial = `${destination}.${process.pid}.partial`;
        await rm(partial, { recursive: true, force: true });
        try {
          if (typeof fill === "string") await extractModelArchive(createReadStream(fill), partial);
          else await fill(partial);
          await rename(partial, destination);
        } finally {
          await rm(partial, { recursive: true, force: true });
        }
        return findModelFile(destination);
      })().finally(() => this.#extracting.delete(destination));
      this.#extracting.set(destination, extracting);
    }
    return extracting;
  }
}
