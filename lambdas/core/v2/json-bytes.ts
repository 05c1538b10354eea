/** The ASCII codes that JSON text is read and written by, for the byte-level readers and writers. */

export const TAB = 9;
export const NEWLINE = 10;
export const RETURN = 13;
export const SPACE = 32;
export const QUOTE = 34;
export const PLUS = 43;
export const COMMA = 44;
export const MINUS = 45;
export const DOT = 46;
export const ZERO = 48;
export const NINE = 57;
export const COLON = 58;
export const UPPER_E = 69;
export const OPEN_BRACKET = 91;
export const BACKSLASH = 92;
export const CLOSE_BRACKET = 93;
export const LOWER_E = 101;
export const OPEN_BRACE = 123;
export const CLOSE_BRACE = 125;
export const FIRST_NON_ASCII = 0x80;

/** JSON's whitespace; a position past the end (undefined) is not. */
export const isSpace = (c: number | undefined) => c === SPACE || c === NEWLINE || c === RETURN || c === TAB;
export const isDigit = (c: number) => c >= ZERO && c <= NINE;
