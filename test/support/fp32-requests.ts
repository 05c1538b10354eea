/** Shared by the FP32 fast path's tests: request data and the general path they are held against. */
import { mulberry32 } from "#core/tensor/seeded-random.ts";
import { parseInferRequest, parseTensorDocument } from "#core/v2/parse.ts";
import { decodeInput } from "#core/v2/tensor-codec.ts";

/** `count` deterministic values in (-4, 4), full double precision, as clients send them. */
export function row(count: number, seed: number): number[] {
  const next = mulberry32(seed);
  return Array.from({ length: count }, () => (next() - 0.5) * 8);
}

/** The general path alone: JSON.parse, zod, then the codec. */
export function generalPath(body: string) {
  const request = parseTensorDocument(body, parseInferRequest, (r) => r.inputs);
  return { ...request, inputs: request.inputs.map(decodeInput) };
}
