/**
 * IEEE 754 half precision, for FP16 tensors carried as Uint16Array bit patterns and for FP16 weights.
 * Rounding is @petamoriken/float16's: once from the double, ties to even (no double rounding).
 */
import { getFloat16, setFloat16 } from "@petamoriken/float16";

const scratch = new DataView(new ArrayBuffer(2));

/** The nearest half-precision value's bits (ties to even); beyond 65504 rounds to infinity, as a cast does. */
export function toFloat16Bits(value: number): number {
  setFloat16(scratch, 0, value, true);
  return scratch.getUint16(0, true);
}

export function fromFloat16Bits(bits: number): number {
  scratch.setUint16(0, bits, true);
  return getFloat16(scratch, 0, true);
}

const FP16_MAX = 65504;

/** FP32 -> FP16 bit patterns for weights: rounded as toFloat16Bits, but clamped to ±65504, not infinity. */
export function float32ToFloat16Bits(values: Float32Array): { bits: Uint16Array; clamped: number } {
  const bits = new Uint16Array(values.length);
  const view = new DataView(bits.buffer);
  let clamped = 0;
  for (let i = 0; i < values.length; i++) {
    let value = values[i]!;
    if (value > FP16_MAX || value < -FP16_MAX) {
      clamped++;
      value = value > 0 ? FP16_MAX : -FP16_MAX;
    }
    setFloat16(view, i * 2, value, true);
  }
  return { bits, clamped };
}
