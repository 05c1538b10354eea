import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { mulberry32 } from "#core/tensor/seeded-random.ts";
import { float32ArrayJson, wasmFloat32Json, wasmFloat32WriterMemoryBytes } from "#core/v2/float32-json.ts";
import { FLOAT32_WRITER_WASM } from "#core/v2/float32-writer-wasm.ts";
import { compileFloat32Writer, moduleSource } from "../../wasm/build.ts";

/** Float32 values of every layout the writers know (plain, fraction, exponent form, zeros, non-finite), no subnormals. */
function mixedFloats(count: number, seed: number): Float32Array {
  const next = mulberry32(seed);
  const special = [0, -0, Number.NaN, Infinity, -Infinity, 0.5, 16777216, 1e-7, 6.02e23, 123456789];
  return Float32Array.from({ length: count }, (_, i) =>
    i % 17 === 0
      ? (special[i % special.length] as number)
      : (next() + 0.01) * (i % 2 ? -1 : 1) * 10 ** Math.floor(next() * 34 - 10),
  );
}

describe("the float32 writer's WebAssembly module", () => {
  it("is what wasm/float32-writer.ts compiles to", async () => {
    const binary = await compileFloat32Writer();
    expect(Buffer.from(FLOAT32_WRITER_WASM, "base64").equals(Buffer.from(binary))).toBe(true);
    const committed = await readFile(
      new URL("../../lambdas/core/v2/float32-writer-wasm.ts", import.meta.url),
      "utf8",
    );
    expect(committed).toBe(moduleSource(binary));
  }, 60_000);

  it("writes a Float32Array byte for byte as the JavaScript writer writes its numbers", () => {
    for (const seed of [1, 2, 3]) {
      const floats = mixedFloats(50_000, seed);
      // An array of numbers always takes the JavaScript writer.
      const text = wasmFloat32Json(floats);
      expect(text).toBeDefined();
      expect(text).toBe(float32ArrayJson(Array.from(floats)));
      expect(float32ArrayJson(floats)).toBe(text);
    }
  });

  it("writes the longest forms: 21 integer digits with a sign, and six leading zeros", () => {
    const floats = Float32Array.from({ length: 1000 }, (_, i) => (i % 2 ? -1.2345678e20 : -1.2345678e-6));
    const text = wasmFloat32Json(floats);
    expect(text).toBe(float32ArrayJson(Array.from(floats)));
    expect(text).toContain("-123456780000000000000,-0.0000012345678");
  });

  it("leaves an array with a subnormal or an extreme exponent to the JavaScript writer, with the same text", () => {
    const floats = mixedFloats(5000, 4);
    floats[4000] = 1e-40; // subnormal
    floats[10] = 1e-30; // beyond one exact power of ten
    expect(wasmFloat32Json(floats)).toBeUndefined();
    const text = float32ArrayJson(floats)!;
    expect(text).toBe(float32ArrayJson(Array.from(floats)));
    expect(text).toContain(JSON.stringify(Math.fround(1e-40)));
  });

  it("grows its memory for a larger output and still writes smaller ones after it", () => {
    const large = mixedFloats(300_000, 5);
    const small = mixedFloats(10, 6);
    expect(wasmFloat32Json(large)).toBe(float32ArrayJson(Array.from(large)));
    expect(wasmFloat32Json(small)).toBe(float32ArrayJson(Array.from(small)));
  });

  it("keeps its memory bounded when outputs grow a little at a time", () => {
    wasmFloat32Json(mixedFloats(10, 7));
    const before = wasmFloat32WriterMemoryBytes();
    // Larger than any output before it in this file, then 40 a little larger each.
    const floats = mixedFloats(404_000, 8);
    for (let count = 400_000; count < 404_000; count += 100) wasmFloat32Json(floats.subarray(0, count));
    // Had each reserved a block of its own, the memory would have grown by some 340 MB.
    expect(wasmFloat32WriterMemoryBytes() - before).toBeLessThan(30 * 1024 * 1024);
  });
});
