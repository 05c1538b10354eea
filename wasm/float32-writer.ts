// AssemblyScript, compiled by `npm run build:wasm` into lambdas/core/v2/float32-writer-wasm.ts.
// The same algorithm as writeFloat32s in lambdas/core/v2/float32-json.ts, which documents it and which
// this must match byte for byte (test/unit/float32-writer-wasm.test.ts checks both).

const POW10: StaticArray<f64> = [
  1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17,
  1e18, 1e19, 1e20, 1e21, 1e22,
];
const INVERSE_POW10: StaticArray<f64> = [1e0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9];
const SAFETY: f64 = 1e-12;
const SHIFT = new StaticArray<i32>(256);
const HALF_SCALED = new StaticArray<f64>(256);
const DIGIT_PAIRS = new StaticArray<u8>(200);

for (let b = 0; b < 256; b++) {
  const shift = 8 - (((b - 127) * 1233) >> 12);
  unchecked((SHIFT[b] = shift));
  unchecked((HALF_SCALED[b] = Math.pow(2, <f64>(b - 151)) * Math.pow(10, <f64>shift)));
}
for (let i = 0; i < 100; i++) {
  unchecked((DIGIT_PAIRS[2 * i] = <u8>(48 + i / 10)));
  unchecked((DIGIT_PAIRS[2 * i + 1] = <u8>(48 + (i % 10))));
}

const COMMA: u8 = 44;
const MINUS: u8 = 45;
const DOT: u8 = 46;
const ZERO: u8 = 48;
const PLUS: u8 = 43;
const LOWER_E: u8 = 101;
const QUOTE: u8 = 34;

/** A block of `bytes` for the caller's input and output; never freed (the caller keeps its largest). */
export function reserve(bytes: usize): usize {
  return heap.alloc(bytes);
}

/** Index of the first value `write` left to its caller, or the count when it wrote them all. */
export let stoppedAt: i32 = 0;

@inline
function pow10(k: i32): f64 {
  return unchecked(POW10[k]);
}

@inline
function scale(magnitude: f64, shift: i32): f64 {
  return shift >= 0 ? magnitude * pow10(shift) : magnitude / pow10(-shift);
}

/** Writes `value`'s decimal digits so that they end just before `end`. */
@inline
function writeDigits(end: usize, value: i32): void {
  let rest = value;
  let i = end;
  while (rest >= 100) {
    const quotient = rest / 100;
    const pair = (rest - quotient * 100) << 1;
    i -= 2;
    store<u8>(i + 1, unchecked(DIGIT_PAIRS[pair + 1]));
    store<u8>(i, unchecked(DIGIT_PAIRS[pair]));
    rest = quotient;
  }
  if (rest >= 10) {
    const pair = rest << 1;
    store<u8>(i - 1, unchecked(DIGIT_PAIRS[pair + 1]));
    store<u8>(i - 2, unchecked(DIGIT_PAIRS[pair]));
  } else store<u8>(i - 1, <u8>(48 + rest));
}

/** Writes exactly `count` digits of `value` (leading zeros kept), ending just before `end`. */
@inline
function writeDigitsPadded(end: usize, value: i32, count: i32): void {
  for (let i = end - <usize>count; i < end; i++) store<u8>(i, ZERO);
  writeDigits(end, value);
}

/** Writes `text` (ASCII) at `pos`; returns the position after it. */
function writeText(pos: usize, text: string): usize {
  for (let i = 0; i < text.length; i++) store<u8>(pos + <usize>i, <u8>text.charCodeAt(i));
  return pos + <usize>text.length;
}

/**
 * Writes the float32 values whose bits are at `words[from, to)`, comma-separated, at `out`, and
 * returns the position after them. Stops at a subnormal or an extreme exponent (`stoppedAt` says
 * where), which its caller writes another way.
 */
export function write(words: usize, from: i32, to: i32, out: usize): usize {
  let pos = out;
  for (let i = from; i < to; i++) {
    if (i > from) store<u8>(pos++, COMMA);
    const word = load<u32>(words + (<usize>i << 2));
    const biasedExponent = <i32>((word >>> 23) & 0xff);
    if (biasedExponent == 0) {
      if ((word & 0x7fffff) != 0) {
        stoppedAt = i;
        return pos;
      }
      if (word >>> 31) store<u8>(pos++, MINUS);
      store<u8>(pos++, ZERO);
      continue;
    }
    if (biasedExponent == 0xff) {
      pos = writeText(pos, (word & 0x7fffff) != 0 ? '"NaN"' : word >>> 31 ? '"-Infinity"' : '"Infinity"');
      continue;
    }
    let shift = unchecked(SHIFT[biasedExponent]);
    if (shift < -21 || shift > 21) {
      stoppedAt = i;
      return pos;
    }
    const magnitude = Math.abs(<f64>reinterpret<f32>(word));
    let exponent = 8 - shift;
    let scaled = scale(magnitude, shift);
    let half = unchecked(HALF_SCALED[biasedExponent]);
    if (scaled >= 999_999_999.5) {
      exponent++;
      shift--;
      scaled = scale(magnitude, shift);
      half /= 10;
    }
    const margin = scaled * SAFETY;
    let low = <i32>Math.floor(scaled - ((word & 0x7fffff) == 0 ? half / 2 : half) + margin);
    let high = <i32>(Math.ceil(scaled + half - margin) - 1);
    let dropped = 0;
    while (true) {
      const nextHigh = high / 10;
      const nextLow = low / 10;
      if (nextHigh == nextLow) break;
      high = nextHigh;
      low = nextLow;
      dropped++;
    }
    let rest = <i32>Math.round(scaled * unchecked(INVERSE_POW10[dropped]));
    if (rest <= low) rest = low + 1;
    else if (rest > high) rest = high;
    let length = 9 - dropped;
    if (<f64>rest >= pow10(length)) {
      rest = 1;
      length = 1;
      exponent++;
    }
    if (word >>> 31) store<u8>(pos++, MINUS);
    if (exponent < 0 && exponent >= -6) {
      store<u8>(pos, ZERO);
      store<u8>(pos + 1, DOT);
      let at = pos + 2;
      for (let z = -exponent - 1; z > 0; z--) store<u8>(at++, ZERO);
      writeDigits(at + <usize>length, rest);
      pos = at + <usize>length;
      continue;
    }
    if (exponent >= 0 && exponent < 21) {
      const integerDigits = exponent + 1;
      if (length <= integerDigits) {
        writeDigits(pos + <usize>length, rest);
        for (let z = length; z < integerDigits; z++) store<u8>(pos + <usize>z, ZERO);
        pos += <usize>integerDigits;
        continue;
      }
      const fractionDigits = length - integerDigits;
      const divisor = <i32>pow10(fractionDigits);
      const integer = rest / divisor;
      const end = pos + <usize>length + 1;
      writeDigitsPadded(end, rest - integer * divisor, fractionDigits);
      store<u8>(pos + <usize>integerDigits, DOT);
      writeDigits(pos + <usize>integerDigits, integer);
      pos = end;
      continue;
    }
    if (length > 1) {
      const divisor = <i32>pow10(length - 1);
      const lead = rest / divisor;
      writeDigitsPadded(pos + <usize>length + 1, rest - lead * divisor, length - 1);
      store<u8>(pos, <u8>(48 + lead));
      store<u8>(pos + 1, DOT);
      pos += <usize>length + 1;
    } else store<u8>(pos++, <u8>(48 + rest));
    store<u8>(pos++, LOWER_E);
    store<u8>(pos++, exponent < 0 ? MINUS : PLUS);
    const power = exponent < 0 ? -exponent : exponent;
    if (power >= 10) store<u8>(pos++, <u8>(48 + power / 10));
    store<u8>(pos++, <u8>(48 + (power % 10)));
  }
  stoppedAt = to;
  return pos;
}
