// Kept over JSON.stringify (npm run bench:v2-json, one run): 1024 FP32 values written in 48 µs against 158 µs, 150528 in 9.3 ms against 52 ms; the reader is request-scan.ts's.
/**
 * FP32 tensor data as JSON text, both ways, without JSON.parse / JSON.stringify's per-number cost.
 * On an MLP with 1024 floats in and out these two were 0.4 ms of a 2.6 ms request.
 *
 * Reading gives exactly what JSON.parse followed by a Float32Array store gives (the decimal rounded
 * to a double, then to float32). Writing gives a short decimal that reads back to the same float32:
 * at most 9 significant digits, as protobuf's JSON mapping writes `float` fields, instead of the
 * 17 digits of the value widened to a double.
 */

import {
  CLOSE_BRACKET,
  COMMA,
  DOT,
  isDigit,
  isSpace,
  LOWER_E,
  MINUS,
  OPEN_BRACKET,
  PLUS,
  UPPER_E,
  ZERO,
} from "./json-bytes.ts";

const POW10 = Float64Array.from({ length: 23 }, (_, i) => 10 ** i);
/** Inexact reciprocals, for guesses that are then checked with exact products. */
const INVERSE_POW10 = Float64Array.from({ length: 10 }, (_, i) => 1 / 10 ** i);

/** Relative margin around a fast-path double: far above its worst error (about 5e-16). */
const MARGIN = 1e-14;

/** Significant digits kept: their double is within a few ulps, far inside MARGIN. */
const MAX_SIGNIFICANT = 19;

/**
 * Whether the four bytes of a little-endian word are all ASCII digits: each byte's high nibble is 3,
 * and stays 3 with 6 added (a low nibble of 10 or more carries).
 */
function areFourDigits(word: number): boolean {
  return ((word & 0xf0f0f0f0) | (((word + 0x06060606) & 0xf0f0f0f0) >>> 4)) === 0x33333333;
}

/** The number four ASCII digits spell, the first in the word's low byte: pairs, then the pair of pairs. */
function fourDigits(word: number): number {
  const digits = word - 0x30303030;
  const pairs = (Math.imul(digits, 10) + (digits >>> 8)) & 0x00ff00ff;
  return (Math.imul(pairs, 100) + (pairs >>> 16)) & 0xffff;
}

/** Where a successful `readFloat32List` ended: the index after the `]`, and the elements it stored. */
export interface ListRead {
  end: number;
  count: number;
}

/**
 * Reads the JSON array that starts at `bytes[start]` (a `[`) into `out` from `out[offset]`, and
 * says in `read` where it ended. Returns false, having read nothing usable, unless the array is a
 * flat list of JSON numbers that fits: callers then take the general path, whose errors name the
 * problem. `bytes` is the ASCII text of the JSON document; a byte that cannot continue it (a 0 past
 * the end, say) ends it.
 */
export function readFloat32List(
  bytes: Uint8Array,
  start: number,
  out: Float32Array,
  offset: number,
  read: ListRead,
): boolean {
  let i = start + 1;
  let c = bytes[i] ?? 0;
  while (isSpace(c)) c = bytes[++i] ?? 0;
  let count = offset;
  if (c === CLOSE_BRACKET) {
    read.end = i + 1;
    read.count = 0;
    return true;
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const wordLimit = bytes.length - 4;
  for (;;) {
    const negative = c === MINUS;
    if (negative) c = bytes[++i] ?? 0;
    const digitsStart = i;
    // The significant digits as a double: exact up to 15 of them, within a few ulps up to the 19
    // kept (checked below); later ones only move the exponent.
    let mantissa = 0;
    let significant = 0;
    let exponent = 0;
    if (c === ZERO) {
      c = bytes[++i] ?? 0;
      if (isDigit(c)) return false; // JSON has no leading zeros
    } else if (isDigit(c)) {
      do {
        if (significant < MAX_SIGNIFICANT) {
          mantissa = mantissa * 10 + (c - ZERO);
          significant++;
        } else exponent++;
        c = bytes[++i] ?? 0;
      } while (isDigit(c));
    } else return false;
    if (c === DOT) {
      const fractionStart = ++i;
      // Leading zeros of a fraction are not significant.
      if (mantissa === 0) while (bytes[i] === ZERO) i++;
      exponent -= i - fractionStart;
      // Four digits at a time while there are four (see fourDigits), then one at a time.
      while (i <= wordLimit) {
        const word = view.getInt32(i, true);
        if (!areFourDigits(word)) break;
        if (significant < MAX_SIGNIFICANT) {
          mantissa = mantissa * 10_000 + fourDigits(word);
          significant += 4;
          exponent -= 4;
        }
        i += 4;
      }
      c = bytes[i] ?? 0;
      while (isDigit(c)) {
        if (significant < MAX_SIGNIFICANT) {
          mantissa = mantissa * 10 + (c - ZERO);
          significant++;
          exponent--;
        }
        c = bytes[++i] ?? 0;
      }
      if (i === fractionStart) return false;
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
        value = decimalAt(bytes, digitsStart, i);
      }
    } else value = decimalAt(bytes, digitsStart, i);
    if (count === out.length) return false;
    out[count++] = negative ? -value : value;
    while (isSpace(c)) c = bytes[++i] ?? 0;
    if (c === CLOSE_BRACKET) {
      read.end = i + 1;
      read.count = count - offset;
      return true;
    }
    if (c !== COMMA) return false;
    c = bytes[++i] ?? 0;
    while (isSpace(c)) c = bytes[++i] ?? 0;
  }
}

/** Reads `out.length` elements exactly, or gives up; see readFloat32List. */
export function readFloat32Array(bytes: Uint8Array, start: number, out: Float32Array): boolean {
  const read = { end: 0, count: 0 };
  return readFloat32List(bytes, start, out, 0, read) && read.count === out.length;
}

/** The number written in `bytes[start, end)`, as JSON.parse reads it. */
function decimalAt(bytes: Uint8Array, start: number, end: number): number {
  return Number(Buffer.from(bytes.buffer, bytes.byteOffset + start, end - start).toString("latin1"));
}

const bits = new Float32Array(1);
const bitsView = new Uint32Array(bits.buffer);
/** "00" to "99": two digits per division. */
const DIGIT_PAIRS = Uint8Array.from({ length: 200 }, (_, i) =>
  i % 2 === 0 ? ZERO + Math.floor(i / 20) : ZERO + (Math.floor(i / 2) % 10),
);
/**
 * Shrinks the interval of decimals that read back to a float32 by far more than the error of
 * computing it in doubles (about 1e-16 relative), so that every decimal inside reads back.
 */
const SAFETY = 1e-12;
/**
 * Per biased exponent b: the power of ten that scales the binade's values to nine integer digits,
 * 8 - floor(log10(2^(b-127))) (1233/4096 is log10(2) closely enough for every float32 exponent).
 */
const SHIFT = Int32Array.from({ length: 256 }, (_, b) => 8 - (((b - 127) * 1233) >> 12));
/**
 * Per biased exponent: half the spacing of float32 values in the binade, 2^(b-151), scaled as its
 * values are. Its rounding error is far inside SAFETY.
 */
const HALF_SCALED = Float64Array.from({ length: 256 }, (_, b) => 2 ** (b - 151) * 10 ** (SHIFT[b] as number));

/** Writes a float32 value in its short form at `pos`; returns the position after it. */
function writeFloat32At(out: Uint8Array, pos: number, value: number): number {
  bits[0] = value;
  return writeFloat32s(out, pos, bits, bitsView, 0, 1);
}

/**
 * Writes `values[from, to)`, comma-separated, at `pos` and returns the position after them: each in
 * its shortest-or-nearly decimal (at most 9 significant digits), or, for zero, subnormals, extreme
 * exponents and non-finite values, as numberJson writes it. `words` are the values' bits.
 *
 * The decimals that read back to a value (JSON reader to double, then to float32) are those within
 * half the float32 spacing of it, a quarter below a power of two. With the value scaled to nine
 * integer digits, the digits dropped are those whose rounded remainder still falls strictly inside
 * that interval, shrunk by a safety margin: no write needs reading back to check. One loop, tables in
 * locals: a call per value cost a quarter of the time.
 */
function writeFloat32s(
  out: Uint8Array,
  start: number,
  values: Float32Array,
  words: Uint32Array,
  from: number,
  to: number,
): number {
  const shifts = SHIFT;
  const pow10 = POW10;
  const halves = HALF_SCALED;
  const inverse = INVERSE_POW10;
  let pos = start;
  for (let i = from; i < to; i++) {
    if (i > from) out[pos++] = COMMA;
    const value = values[i] as number;
    const word = words[i] as number;
    const biasedExponent = (word >>> 23) & 0xff;
    if (biasedExponent === 0 || biasedExponent === 0xff) {
      pos = writeAscii(out, pos, numberJson(value));
      continue;
    }
    const magnitude = value < 0 ? -value : value;
    let shift = shifts[biasedExponent] as number;
    if (shift < -21 || shift > 21) {
      pos = writeAscii(out, pos, numberJson(value));
      continue;
    }
    let exponent = 8 - shift;
    let scaled = shift >= 0 ? magnitude * (pow10[shift] as number) : magnitude / (pow10[-shift] as number);
    let half = halves[biasedExponent] as number;
    // The binary exponent's estimate of the decimal one can be one short.
    if (scaled >= 999_999_999.5) {
      exponent++;
      shift--;
      scaled = shift >= 0 ? magnitude * (pow10[shift] as number) : magnitude / (pow10[-shift] as number);
      half /= 10;
    }
    const margin = scaled * SAFETY;
    // The integers strictly inside the interval: (low, high]. Below 2^31, so int32 from here on.
    let low = Math.floor(scaled - ((word & 0x7fffff) === 0 ? half / 2 : half) + margin) | 0;
    let high = (Math.ceil(scaled + half - margin) - 1) | 0;
    // Drop digits while a multiple of the next power of ten still lies inside.
    let dropped = 0;
    for (;;) {
      const nextHigh = (high / 10) | 0;
      const nextLow = (low / 10) | 0;
      if (nextHigh === nextLow) break;
      high = nextHigh;
      low = nextLow;
      dropped++;
    }
    // Of the candidates (low, high] at this length, the one nearest the value. It never ends in a zero:
    // the loop above would have dropped that digit too.
    let rest = Math.round(scaled * (inverse[dropped] as number));
    if (rest <= low) rest = low + 1;
    else if (rest > high) rest = high;
    let length = 9 - dropped;
    if (rest >= (pow10[length] as number)) {
      // All nine digits dropped but a carry: the value reads back from the next power of ten.
      rest = 1;
      length = 1;
      exponent++;
    }
    if (word >>> 31) out[pos++] = MINUS;
    // The layouts Number.prototype.toString uses: plain from 1e-6 up to 1e21, exponent form outside.
    if (exponent < 0 && exponent >= -6) {
      out[pos] = ZERO;
      out[pos + 1] = DOT;
      let at = pos + 2;
      for (let z = -exponent - 1; z > 0; z--) out[at++] = ZERO;
      pos = writeDigits(out, at + length, rest);
      continue;
    }
    if (exponent >= 0 && exponent < 21) {
      const integerDigits = exponent + 1;
      if (length <= integerDigits) {
        writeDigits(out, pos + length, rest);
        for (let z = length; z < integerDigits; z++) out[pos + z] = ZERO;
        pos += integerDigits;
        continue;
      }
      // The fraction's digits first, then the integer part's before the dot.
      const fractionDigits = length - integerDigits;
      const divisor = pow10[fractionDigits] as number;
      const integer = Math.floor(rest / divisor);
      const end = pos + length + 1;
      writeDigitsPadded(out, end, rest - integer * divisor, fractionDigits);
      out[pos + integerDigits] = DOT;
      writeDigits(out, pos + integerDigits, integer);
      pos = end;
      continue;
    }
    if (length > 1) {
      const divisor = pow10[length - 1] as number;
      const lead = Math.floor(rest / divisor);
      writeDigitsPadded(out, pos + length + 1, rest - lead * divisor, length - 1);
      out[pos] = ZERO + lead;
      out[pos + 1] = DOT;
      pos += length + 1;
    } else out[pos++] = ZERO + rest;
    out[pos++] = LOWER_E;
    out[pos++] = exponent < 0 ? MINUS : PLUS;
    const power = exponent < 0 ? -exponent : exponent;
    if (power >= 10) out[pos++] = ZERO + ((power / 10) | 0);
    out[pos++] = ZERO + (power % 10);
  }
  return pos;
}

/** Writes `value`'s decimal digits so that they end just before `end`; returns `end`. */
function writeDigits(out: Uint8Array, end: number, value: number): number {
  let rest = value;
  let i = end;
  while (rest >= 100) {
    const quotient = (rest / 100) | 0;
    const pair = (rest - quotient * 100) << 1;
    out[--i] = DIGIT_PAIRS[pair + 1] as number;
    out[--i] = DIGIT_PAIRS[pair] as number;
    rest = quotient;
  }
  if (rest >= 10) {
    const pair = rest << 1;
    out[--i] = DIGIT_PAIRS[pair + 1] as number;
    out[--i] = DIGIT_PAIRS[pair] as number;
  } else out[--i] = ZERO + rest;
  return end;
}

/** Writes exactly `count` digits of `value` (leading zeros kept), ending just before `end`. */
function writeDigitsPadded(out: Uint8Array, end: number, value: number, count: number): void {
  for (let i = end - count; i < end; i++) out[i] = ZERO;
  writeDigits(out, end, value);
}

/** Longest element written: a double's own form, or a quoted non-finite name. */
const MAX_ELEMENT_CHARS = 26;
/**
 * A buffer reused between synchronous calls: it grows to the largest size asked for, up to `limit`;
 * beyond that each call gets a buffer of its own. Callers must be done with it before they return.
 */
export class ScratchBuffer {
  #buffer: Buffer;
  readonly #limit: number;

  constructor(initial: number, limit: number) {
    this.#buffer = Buffer.allocUnsafe(initial);
    this.#limit = limit;
  }

  /** At least `bytes` bytes, contents undefined. */
  take(bytes: number): Buffer {
    if (bytes <= this.#buffer.length) return this.#buffer;
    const buffer = Buffer.allocUnsafe(bytes);
    if (bytes <= this.#limit) this.#buffer = buffer;
    return buffer;
  }
}

const outputScratch = new ScratchBuffer(64 * 1024, 1 << 20);

function writeAscii(out: Uint8Array, pos: number, text: string): number {
  for (let i = 0; i < text.length; i++) out[pos++] = text.charCodeAt(i);
  return pos;
}

const NON_FINITE_NAMES = new Set(["NaN", "Infinity", "-Infinity"]);

/**
 * FP32 (or FP16) data as a JSON array: numbers in their short float32 form (a number that is not a
 * float32 value in its full double form) and the non-finite names quoted. A Float32Array is written
 * straight from its elements' bits. Undefined when an element is anything else, for the caller's
 * general path.
 */
export function float32ArrayJson(values: Float32Array | ArrayLike<unknown>): string | undefined {
  if (values instanceof Float32Array) return float32TypedJson(values);
  const out = outputScratch.take(values.length * (MAX_ELEMENT_CHARS + 1) + 2);
  let pos = 0;
  out[pos++] = OPEN_BRACKET;
  for (let i = 0; i < values.length; i++) {
    if (i > 0) out[pos++] = COMMA;
    const value = values[i];
    if (typeof value === "number") {
      pos =
        Math.fround(value) === value
          ? writeFloat32At(out, pos, value)
          : writeAscii(out, pos, numberJson(value));
    } else if (typeof value === "string" && NON_FINITE_NAMES.has(value)) {
      pos = writeAscii(out, pos, `"${value}"`);
    } else return undefined;
  }
  out[pos++] = CLOSE_BRACKET;
  return out.toString("latin1", 0, pos);
}

function float32TypedJson(values: Float32Array): string {
  const out = outputScratch.take(values.length * (MAX_ELEMENT_CHARS + 1) + 2);
  const words = new Uint32Array(values.buffer, values.byteOffset, values.length);
  let pos = 0;
  out[pos++] = OPEN_BRACKET;
  pos = writeFloat32s(out, pos, values, words, 0, values.length);
  out[pos++] = CLOSE_BRACKET;
  return out.toString("latin1", 0, pos);
}

/** A number the short form does not cover: zero keeps its sign, non-finite values are quoted names. */
function numberJson(value: number): string {
  if (value === 0) return 1 / value < 0 ? "-0" : "0";
  return Number.isFinite(value) ? JSON.stringify(value) : `"${value}"`;
}
