/**
 * FP32 tensor data as JSON text, both ways, without JSON.parse / JSON.stringify's per-number cost.
 * On an MLP with 1024 floats in and out these two were 0.4 ms of a 2.6 ms request.
 *
 * Reading gives exactly what JSON.parse followed by a Float32Array store gives (the decimal rounded
 * to a double, then to float32). Writing gives a short decimal that reads back to the same float32:
 * at most 9 significant digits, as protobuf's JSON mapping writes `float` fields, instead of the
 * 17 digits of the value widened to a double.
 */

const POW10 = Float64Array.from({ length: 23 }, (_, i) => 10 ** i);

/** Relative margin around a fast-path double: far above its worst error (about 5e-16). */
const MARGIN = 1e-14;

const TAB = 9;
const NEWLINE = 10;
const RETURN = 13;
const SPACE = 32;
const PLUS = 43;
const COMMA = 44;
const MINUS = 45;
const DOT = 46;
const ZERO = 48;
const NINE = 57;
const UPPER_E = 69;
const OPEN_BRACKET = 91;
const CLOSE_BRACKET = 93;
const LOWER_E = 101;

const isDigit = (c: number) => c >= ZERO && c <= NINE;
const isSpace = (c: number) => c === SPACE || c === NEWLINE || c === RETURN || c === TAB;

/**
 * Reads the JSON array that starts at `bytes[start]` (a `[`) into `out`, which must have exactly as
 * many elements. Returns false, having read nothing usable, unless the array is a flat list of JSON
 * numbers of exactly `out.length` elements: callers then take the general path, whose errors name
 * the problem. `bytes` is the ASCII text of the JSON document.
 */
export function readFloat32Array(bytes: Buffer, start: number, out: Float32Array): boolean {
  let i = start + 1;
  let c = bytes[i] ?? 0;
  while (isSpace(c)) c = bytes[++i] ?? 0;
  let count = 0;
  if (c === CLOSE_BRACKET) return out.length === 0;
  for (;;) {
    const negative = c === MINUS;
    if (negative) c = bytes[++i] ?? 0;
    const digitsStart = i;
    // Up to 19 significant digits in a double (exact up to 15); later ones only move the exponent.
    let mantissa = 0;
    let significant = 0;
    let exponent = 0;
    if (c === ZERO) {
      c = bytes[++i] ?? 0;
      if (isDigit(c)) return false; // JSON has no leading zeros
    } else if (isDigit(c)) {
      do {
        if (significant < 19) {
          mantissa = mantissa * 10 + (c - ZERO);
          significant++;
        } else exponent++;
        c = bytes[++i] ?? 0;
      } while (isDigit(c));
    } else return false;
    if (c === DOT) {
      c = bytes[++i] ?? 0;
      if (!isDigit(c)) return false;
      do {
        if (significant < 19) {
          mantissa = mantissa * 10 + (c - ZERO);
          exponent--;
          if (mantissa !== 0) significant++;
        }
        c = bytes[++i] ?? 0;
      } while (isDigit(c));
    }
    if (c === LOWER_E || c === UPPER_E) {
      c = bytes[++i] ?? 0;
      const negativeExponent = c === MINUS;
      if (c === MINUS || c === PLUS) c = bytes[++i] ?? 0;
      if (!isDigit(c)) return false;
      let written = 0;
      do {
        if (written < 100_000) written = written * 10 + (c - ZERO);
        c = bytes[++i] ?? 0;
      } while (isDigit(c));
      exponent += negativeExponent ? -written : written;
    }
    let value: number;
    if (mantissa === 0) value = 0;
    else if (exponent >= -22 && exponent <= 22) {
      // One IEEE operation on exact operands: correctly rounded while the mantissa is exact (≤ 15 digits).
      value =
        exponent >= 0 ? mantissa * (POW10[exponent] as number) : mantissa / (POW10[-exponent] as number);
      // Longer mantissas are a few ulps off: fine unless a float32 rounding boundary is that close.
      if (significant > 15 && Math.fround(value * (1 - MARGIN)) !== Math.fround(value * (1 + MARGIN))) {
        value = Number(bytes.toString("latin1", digitsStart, i));
      }
    } else value = Number(bytes.toString("latin1", digitsStart, i));
    if (count === out.length) return false;
    out[count++] = negative ? -value : value;
    while (isSpace(c)) c = bytes[++i] ?? 0;
    if (c === CLOSE_BRACKET) return count === out.length;
    if (c !== COMMA) return false;
    c = bytes[++i] ?? 0;
    while (isSpace(c)) c = bytes[++i] ?? 0;
  }
}

const bits = new Float32Array(1);
const bitsView = new Uint32Array(bits.buffer);
const LOG10_2 = Math.log10(2);
const digits = new Uint8Array(9);

/** `magnitude × 10^shift`, rounded to an integer; |shift| ≤ 22 keeps the power exact. */
function scaleToInteger(magnitude: number, shift: number): number {
  return shift >= 0
    ? Math.round(magnitude * (POW10[shift] as number))
    : Math.round(magnitude / (POW10[-shift] as number));
}

/** `n × 10^-shift` as a double, correctly rounded: what a JSON reader makes of those digits. */
function unscale(n: number, shift: number): number {
  return shift >= 0 ? n / (POW10[shift] as number) : n * (POW10[-shift] as number);
}

/**
 * Writes a float32 value's shortest-or-nearly decimal (8 or 9 significant digits, trailing zeros
 * dropped) at `pos` and returns the position after it; -1 when this fast form does not apply
 * (zero, subnormal, non-finite, extreme exponents, or not a float32 value) and the caller must write
 * it another way. Every form written is verified to read back to `value`.
 */
function writeFloat32At(out: Uint8Array, pos: number, value: number): number {
  bits[0] = value;
  const word = bitsView[0] as number;
  const biasedExponent = (word >>> 23) & 0xff;
  if (biasedExponent === 0 || biasedExponent === 0xff) return -1;
  const magnitude = value < 0 ? -value : value;
  let exponent = Math.floor((biasedExponent - 127) * LOG10_2);
  let shift = 8 - exponent;
  if (shift < -21 || shift > 21) return -1;
  let n = scaleToInteger(magnitude, shift);
  // The binary exponent's estimate of the decimal one can be one short.
  if (n >= 1e9) {
    exponent++;
    shift--;
    n = scaleToInteger(magnitude, shift);
  }
  if (n >= 1e9 || n < 1e8) return -1;
  // Nine digits always read back; fewer often do (a float32 made from 0.3 is written 0.3).
  if (Math.fround(unscale(n, shift)) !== magnitude) return -1;
  let digitsInt = n | 0; // below 1e9: int32 arithmetic from here on
  let length = 9;
  while (length > 1 && shift - (10 - length) >= -22) {
    const fewer = scaleToInteger(magnitude, shift - (10 - length));
    if (
      fewer >= (POW10[length - 1] as number) ||
      Math.fround(unscale(fewer, shift - (10 - length))) !== magnitude
    )
      break;
    digitsInt = fewer | 0;
    length--;
  }
  while (digitsInt % 10 === 0) {
    digitsInt = (digitsInt / 10) | 0;
    length--;
  }
  for (let i = length - 1; i >= 0; i--) {
    const quotient = (digitsInt / 10) | 0;
    digits[i] = ZERO + digitsInt - quotient * 10;
    digitsInt = quotient;
  }
  if (word >>> 31) out[pos++] = MINUS;
  // The layouts Number.prototype.toString uses: plain from 1e-6 up to 1e21, exponent form outside.
  if (exponent >= 0 && exponent < 21) {
    for (let i = 0; i <= exponent || i < length; i++) {
      if (i === exponent + 1) out[pos++] = DOT;
      out[pos++] = i < length ? (digits[i] as number) : ZERO;
    }
  } else if (exponent < 0 && exponent >= -6) {
    out[pos++] = ZERO;
    out[pos++] = DOT;
    for (let i = -1; i > exponent; i--) out[pos++] = ZERO;
    for (let i = 0; i < length; i++) out[pos++] = digits[i] as number;
  } else {
    out[pos++] = digits[0] as number;
    if (length > 1) out[pos++] = DOT;
    for (let i = 1; i < length; i++) out[pos++] = digits[i] as number;
    out[pos++] = LOWER_E;
    out[pos++] = exponent < 0 ? MINUS : PLUS;
    pos = writeAscii(out, pos, String(Math.abs(exponent)));
  }
  return pos;
}

/** Longest element written: a double's own form, or a quoted non-finite name. */
const MAX_ELEMENT_CHARS = 26;
/** Reused between calls (they are synchronous); larger outputs get a buffer of their own. */
const SCRATCH_LIMIT = 1 << 20;
let scratch = Buffer.allocUnsafe(64 * 1024);

function writeAscii(out: Uint8Array, pos: number, text: string): number {
  for (let i = 0; i < text.length; i++) out[pos++] = text.charCodeAt(i);
  return pos;
}

const NON_FINITE_NAMES = new Set(["NaN", "Infinity", "-Infinity"]);

/**
 * FP32 (or FP16) data as a JSON array: numbers in their short float32 form (a number that is not a
 * float32 value in its full double form) and the non-finite names quoted. Undefined when an element
 * is anything else, for the caller's general path.
 */
export function float32ArrayJson(values: ArrayLike<unknown>): string | undefined {
  const needed = values.length * (MAX_ELEMENT_CHARS + 1) + 2;
  if (needed > scratch.length && needed <= SCRATCH_LIMIT) scratch = Buffer.allocUnsafe(needed);
  const out = needed > scratch.length ? Buffer.allocUnsafe(needed) : scratch;
  let pos = 0;
  out[pos++] = OPEN_BRACKET;
  for (let i = 0; i < values.length; i++) {
    if (i > 0) out[pos++] = COMMA;
    const value = values[i];
    if (typeof value === "number") {
      const end = value === 0 ? -1 : writeFloat32At(out, pos, value);
      if (end >= 0) pos = end;
      else pos = writeAscii(out, pos, value === 0 && 1 / value < 0 ? "-0" : JSON.stringify(value));
    } else if (typeof value === "string" && NON_FINITE_NAMES.has(value)) {
      pos = writeAscii(out, pos, `"${value}"`);
    } else return undefined;
  }
  out[pos++] = CLOSE_BRACKET;
  return out.toString("latin1", 0, pos);
}
