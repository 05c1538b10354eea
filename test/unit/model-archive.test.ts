import { execFile } from "node:child_process";
import { createReadStream, createWriteStream, existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { promisify } from "node:util";
import { createGzip } from "node:zlib";
import { type Header, pack } from "tar-stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { normalizePrefix, targetModelFor } from "#aws/sagemaker/layout.ts";
import {
  createModelArchive,
  extractModelArchive,
  InvalidArchiveError,
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

/** A gzip'd tar of the members given, for archives our writer would never produce. */
function tarGz(...members: (Partial<Header> & { name: string; content?: string })[]): Readable {
  const archive = pack();
  for (const { content = "", ...header } of members) archive.entry(header, content);
  archive.finalize();
  return Readable.from(archive).pipe(createGzip());
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

  it("fails the archive stream when the model file is not the size it was given", async () => {
    const source = join(root, "short.bin");
    await writeFile(source, Uint8Array.of(1, 2, 3));

    const writing = pipeline(createModelArchive(source, 4), createWriteStream(join(root, "short.tar.gz")));

    await expect(writing).rejects.toThrow(/Size mismatch/);
  });

  it("makes the same archive from the same bytes (content-addressed objects never change)", async () => {
    const bytes = Uint8Array.of(1, 2, 3);
    const first = await readFile(await archiveOf(bytes, "same-a"));
    const second = await readFile(await archiveOf(bytes, "same-b"));

    expect(Buffer.compare(first, second)).toBe(0);
  });

  it("refuses a member that would land outside the destination", async () => {
    const extraction = extractModelArchive(
      tarGz({ name: "../escape.onnx", content: "x" }),
      join(root, "evil"),
    );

    await expect(extraction).rejects.toBeInstanceOf(InvalidArchiveError);
  });

  it("refuses links", async () => {
    const extraction = extractModelArchive(
      tarGz({ name: "model.onnx", type: "symlink", linkname: "/etc/passwd" }),
      join(root, "link"),
    );

    await expect(extraction).rejects.toThrow(/links/);
  });

  const absolute = join(tmpdir(), `maas-archive-absolute-${process.pid}.onnx`);
  it.each([
    ["an absolute path", { name: absolute }],
    ["a .. hidden inside the path", { name: "models/../../escape.onnx" }],
    ["a .. in a pax path", { name: "../escape.onnx", pax: {} }],
    ["a file named ./, no name at all", { name: "./" }],
  ])("refuses %s, writing nothing", async (_, member) => {
    const extraction = extractModelArchive(tarGz({ ...member, content: "x" }), join(root, "refused", "out"));

    await expect(extraction).rejects.toThrow(/outside the model directory/);
    await expect(extraction).rejects.toBeInstanceOf(InvalidArchiveError);
    expect(existsSync(absolute)).toBe(false);
    expect(existsSync(join(root, "refused", "escape.onnx"))).toBe(false);
  });

  it.each([
    ["hard links", { type: "link", linkname: "model.onnx" }],
    ["character devices", { type: "character-device" }],
    ["block devices", { type: "block-device" }],
    ["fifos", { type: "fifo" }],
    ["contiguous files", { type: "contiguous-file" }],
  ] as const)("refuses %s", async (_, member) => {
    const extraction = extractModelArchive(tarGz({ name: "model.onnx", ...member }), join(root, "special"));

    await expect(extraction).rejects.toThrow(/links and special files/);
  });

  it("refuses a file the archive holds twice", async () => {
    const archive = tarGz({ name: "model.onnx", content: "a" }, { name: "./model.onnx", content: "b" });

    const extraction = extractModelArchive(archive, join(root, "twice"));

    await expect(extraction).rejects.toThrow(/'\.\/model\.onnx': the archive holds it twice/);
  });

  it("refuses a member whose pax size is not a number", async () => {
    const archive = tarGz({ name: "model.onnx", pax: { size: "lots" } });

    await expect(extractModelArchive(archive, join(root, "pax-size"))).rejects.toThrow(
      "a tar header has no valid size",
    );
  });

  it("says so when the data is gzip'd but not a tar, or not gzip'd at all", async () => {
    const notTar = Readable.from([Buffer.alloc(1024, "not a tar ")]).pipe(createGzip());
    const notGzip = Readable.from([Buffer.from("plain text")]);

    await expect(extractModelArchive(notTar, join(root, "not-tar"))).rejects.toThrow(/^not a tar archive/);
    await expect(extractModelArchive(notGzip, join(root, "not-gzip"))).rejects.toThrow(/^not a gzip stream/);
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
