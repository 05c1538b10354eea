/**
 * Values as the registry can hold them. DynamoDB numbers stop at 9.9e125 and 38 digits, and the
 * SDK's DocumentClient refuses any number beyond Number.MAX_SAFE_INTEGER (9.007e15) unless wrapped;
 * an item stops at 400 KB. A figure or a message outside these fails the write, and a failed write
 * used to leave the version `optimizing`.
 */

/** Magnitudes are clamped here: below MAX_SAFE_INTEGER, far above any latency, size or ratio. */
export const MAX_FIGURE = 1e15;
/** Smaller magnitudes are recorded as 0 (float32 round-off is ~1e-7 relative). */
const MIN_FIGURE = 1e-12;
/** Messages (errors, reasons) are cut to this many characters. */
export const MAX_MESSAGE_CHARS = 1000;

/** A finite number within ±1e15, to 7 significant digits; NaN reads as 0. */
export function registryNumber(value: number): number {
  if (Number.isNaN(value)) return 0;
  const clamped = Math.max(-MAX_FIGURE, Math.min(MAX_FIGURE, value));
  if (Math.abs(clamped) < MIN_FIGURE) return 0;
  return Number(clamped.toPrecision(7));
}

/** A message cut to MAX_MESSAGE_CHARS, marked where it was cut. */
export function registryMessage(text: string): string {
  return text.length <= MAX_MESSAGE_CHARS ? text : `${text.slice(0, MAX_MESSAGE_CHARS - 1)}…`;
}
