import { closeSync, openSync, readSync } from "node:fs";
import { join } from "node:path";
import type { FunctionAsset } from "../../lib/asset-report.ts";

/** ELF e_machine values of the two Lambda architectures. */
const ELF_MACHINE = { arm64: 183, x64: 62 } as const;
export type LambdaArch = keyof typeof ELF_MACHINE;

const MACH_O_MAGICS = new Set([0xfeedface, 0xfeedfacf, 0xcefaedfe, 0xcffaedfe, 0xcafebabe, 0xbebafeca]);
const FOREIGN_PATH = /(^|\/)(darwin|win32)(\/|$)|\.(dll|dylib|exe)$/i;

function header(path: string): Buffer {
  const buffer = Buffer.alloc(20);
  const fd = openSync(path, "r");
  try {
    const read = readSync(fd, buffer, 0, buffer.length, 0);
    return buffer.subarray(0, read);
  } finally {
    closeSync(fd);
  }
}

/** What an asset for `arch` must not carry: other platforms' files, Mach-O/PE binaries, ELF of the other arch. */
export function foreignBinaries(asset: FunctionAsset, arch: LambdaArch): string[] {
  const otherLinux = new RegExp(`/linux/${arch === "arm64" ? "x64" : "arm64"}/`);
  return asset.files.flatMap((file) => {
    if (FOREIGN_PATH.test(file) || otherLinux.test(`/${file}`)) return [`${file}: another platform's file`];
    const bytes = header(join(asset.directory, file));
    if (bytes.length >= 4 && MACH_O_MAGICS.has(bytes.readUInt32BE(0)))
      return [`${file}: a macOS (Mach-O) binary`];
    if (bytes.length >= 2 && bytes[0] === 0x4d && bytes[1] === 0x5a)
      return [`${file}: a Windows (PE) binary`];
    if (bytes.length >= 20 && bytes.readUInt32BE(0) === 0x7f454c46) {
      const machine = bytes.readUInt16LE(18);
      if (machine !== ELF_MACHINE[arch])
        return [`${file}: an ELF binary for machine ${machine}, not ${arch}`];
    }
    return [];
  });
}

/** The native files of an asset that match its architecture (ELF of the right machine). */
export function nativeBinaries(asset: FunctionAsset, arch: LambdaArch): string[] {
  return asset.files.filter((file) => {
    const bytes = header(join(asset.directory, file));
    return (
      bytes.length >= 20 &&
      bytes.readUInt32BE(0) === 0x7f454c46 &&
      bytes.readUInt16LE(18) === ELF_MACHINE[arch]
    );
  });
}
