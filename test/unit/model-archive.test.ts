import { execFile } from "node:child_process";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { promisify } from "node:util";
import { createGzip } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { normalizePrefix, targetModelFor } from "#aws/sagemaker/layout.ts";
import {
  createModelArchive,
  extractModelArchive,
  InvalidArchiveError,
  tarHeader,
} from "#aws/sagemaker/model-archive.ts";

const run = promisify(execFile);
let root: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "maas-archive-"));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function archiveOf(bytes: Uint8Array, name: string): Promise<string> {
  const source = join(root, `${name}.bin`);
  await writeFile(source, bytes);
  const archive = join(root, `${name}.tar.gz`);
  await pipeline(createModelArchive(source, bytes.byteLength), createWriteStream(archive));
  return archive;
}

/** A gzip'd tar with one hand-made member, for archives our writer would never produce. */
function tarGz(name: string, content: Buffer, type = "0"): Readable {
  const header = tarHeader("placeholder", content.length);
  header.fill(0, 0, 100);
  header.write(name, 0, "utf8");
  header.write(type, 156, "ascii");
  header.fill(" ", 148, 156);
  const checksum = header.reduce((sum, byte) => sum + byte, 0);
  header.write(`${checksum.toString(8).padStart(6, "0")}\0 `, 148, "ascii");
  const padding = Buffer.alloc((512 - (content.length % 512)) % 512);
  return Readable.from([Buffer.concat([header, content, padding, Buffer.alloc(1024)])]).pipe(createGzip());
}

describe("model archives", () => {
  it("round-trips a model through .tar.gz byte for byte, sizes off the block boundary included", async () => {
    const bytes = Uint8Array.from({ length: 70_001 }, (_, i) => (i * 31) % 256);
    const archive = await archiveOf(bytes, "roundtrip");

    const files = await extractModelArchive(createReadStream(archive), join(root, "out"));

    expect(files).toEqual([join(root, "out", "model.onnx")]);
    expect(Buffer.compare(await readFile(files[0]!), Buffer.from(bytes))).toBe(0);
  });

  it("writes an archive that GNU tar lists and extracts (what SageMaker runs on it)", async () => {
    const bytes = Uint8Array.from({ length: 1_234 }, (_, i) => i % 251);
    const archive = await archiveOf(bytes, "gnu");
    await mkdir(join(root, "gnu-out"));

    const { stdout } = await run("tar", ["-tzvf", archive]);
    await run("tar", ["-xzf", archive, "-C", join(root, "gnu-out")]);

    expect(stdout).toMatch(/model\.onnx/);
    expect(Buffer.compare(await readFile(join(root, "gnu-out", "model.onnx")), Buffer.from(bytes))).toBe(0);
  });

  it("extracts archives made by GNU tar: ./ entries, directories, pax and GNU long names", async () => {
    const source = join(root, "gnu-made");
    const longName = `${"deep-".repeat(30)}weights.bin`;
    await mkdir(join(source, "nested"), { recursive: true });
    await writeFile(join(source, "model.onnx"), "onnx bytes");
    await writeFile(join(source, "nested", longName), "long");
    for (const format of ["gnu", "pax"]) {
      const archive = join(root, `made-by-${format}.tar.gz`);
      await run("tar", [`--format=${format}`, "-czf", archive, "-C", source, "."]);

      const files = await extractModelArchive(createReadStream(archive), join(root, `from-${format}`));

      expect(files.sort()).toEqual(
        [join(root, `from-${format}`, "model.onnx"), join(root, `from-${format}`, "nested", longName)].sort(),
      );
      expect(await readFile(join(root, `from-${format}`, "nested", longName), "utf8")).toBe("long");
    }
  });

  it("makes the same archive from the same bytes (content-addressed objects never change)", async () => {
    const bytes = Uint8Array.of(1, 2, 3);
    const first = await readFile(await archiveOf(bytes, "same-a"));
    const second = await readFile(await archiveOf(bytes, "same-b"));

    expect(Buffer.compare(first, second)).toBe(0);
  });

  it("refuses a member that would land outside the destination", async () => {
    const extraction = extractModelArchive(tarGz("../escape.onnx", Buffer.from("x")), join(root, "evil"));

    await expect(extraction).rejects.toBeInstanceOf(InvalidArchiveError);
  });

  it("refuses links", async () => {
    const extraction = extractModelArchive(tarGz("model.onnx", Buffer.alloc(0), "2"), join(root, "link"));

    await expect(extraction).rejects.toThrow(/links/);
  });

  it("reports an archive cut short", async () => {
    const archive = await readFile(await archiveOf(new Uint8Array(5_000), "cut"));
    const { gunzipSync, gzipSync } = await import("node:zlib");
    const truncated = gzipSync(gunzipSync(archive).subarray(0, 2_000));

    await expect(extractModelArchive(Readable.from([truncated]), join(root, "cut-out"))).rejects.toThrow(
      /ends in the middle/,
    );
  });
});

describe("SageMaker model prefix layout", () => {
  it("names the TargetModel after the artifact digest", () => {
    expect(targetModelFor("ab12")).toBe("ab12.tar.gz");
  });

  it("normalizes a prefix to end in exactly one slash", () => {
    expect(normalizePrefix("/sagemaker/models")).toBe("sagemaker/models/");
    expect(normalizePrefix("sagemaker/models//")).toBe("sagemaker/models/");
    expect(normalizePrefix("")).toBe("");
  });
});
