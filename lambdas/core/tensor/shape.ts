/** Shape arithmetic shared by request checks, codecs, parity inputs and quantization. */
import type { Dim } from "#core/model.ts";

export function formatShape(shape: readonly Dim[]): string {
  return `[${shape.join(", ")}]`;
}

/** Number of elements a concrete shape holds. */
export function elementCount(shape: readonly number[]): number {
  let count = 1;
  for (const dim of shape) count *= dim;
  return count;
}
