import { createHash } from "node:crypto";
import * as z from "zod/mini";
import type { Variant } from "#core/model.ts";
import { modelVersionSchema } from "#core/registry/registry.ts";

/**
 * The optimizer's decision for one model's bytes under one set of settings, kept in the model bucket
 * beside the artifact and written once. Timing picks between lossless candidates, and timing is noise
 * near a tie: without a record, identical uploads could serve different variants. With it, every
 * version of the same bytes (and settings) serves what the first optimization chose.
 */
export interface DecisionStore {
  /** The object's text, or undefined when there is none. */
  read(bucket: string, key: string): Promise<string | undefined>;
  /** Writes `text` unless an object is at `key` already; false when one was (the first decision stands). */
  putOnce(bucket: string, key: string, text: string): Promise<boolean>;
}

export const DECISION_FORMAT = 1;

/** Who made the selection: the lossless-only rule, or the manifest's `optimize.allowLossy`. */
export type DecisionBy = "optimizer" | "manifest";

export interface OptimizationDecision {
  readonly format: typeof DECISION_FORMAT;
  readonly sha256: string;
  readonly settingsDigest: string;
  /** The settings the digest is over, for a person reading the file. */
  readonly settings: Readonly<Record<string, unknown>>;
  readonly decidedAt: string;
  /** The selected variant's kind; `original` for the upload itself. */
  readonly selected: string;
  readonly by: DecisionBy;
  /** Kinds whose outputs matched the original's within float32 tolerance (see parity.ts, checkLossless). */
  readonly lossless: readonly string[];
  /** As the version record holds them, `selected` flags included. */
  readonly variants: readonly Variant[];
}

const decisionSchema = z.object({
  format: z.literal(DECISION_FORMAT),
  sha256: z.string().check(z.regex(/^[0-9a-f]{64}$/)),
  settingsDigest: z.string().check(z.regex(/^[0-9a-f]{64}$/)),
  settings: z.record(z.string(), z.unknown()),
  decidedAt: z.string(),
  selected: z.string(),
  by: z.enum(["optimizer", "manifest"]),
  lossless: z.array(z.string()),
  variants: modelVersionSchema.shape.variants,
});

/** The stored decision is unreadable or belongs to other bytes: never overwritten, so never guessed past. */
export class InvalidDecisionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidDecisionError";
  }
}

/** sha256 of the settings as JSON: the caller builds them in a fixed key order. */
export function digestSettings(settings: Readonly<Record<string, unknown>>): string {
  return createHash("sha256").update(JSON.stringify(settings)).digest("hex");
}

/** Beside the content-addressed artifact (`artifacts/sha256/<sha>.onnx`), one file per settings digest. */
export function decisionKey(sha256: string, settingsDigest: string): string {
  return `artifacts/sha256/${sha256}.optimization-${settingsDigest.slice(0, 16)}.json`;
}

export function parseDecision(
  text: string,
  expected: { readonly sha256: string; readonly settingsDigest: string },
): OptimizationDecision {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new InvalidDecisionError(`the optimization decision is not JSON: ${(error as Error).message}`);
  }
  const parsed = decisionSchema.safeParse(json);
  if (!parsed.success) {
    throw new InvalidDecisionError(`the optimization decision is invalid: ${z.prettifyError(parsed.error)}`);
  }
  const decision = parsed.data;
  if (decision.sha256 !== expected.sha256 || decision.settingsDigest !== expected.settingsDigest) {
    throw new InvalidDecisionError(
      `the optimization decision at ${decisionKey(expected.sha256, expected.settingsDigest)} is for other bytes or settings`,
    );
  }
  const selected = decision.variants.filter((variant) => variant.selected).map((variant) => variant.kind);
  if (selected.length !== 1 || selected[0] !== decision.selected) {
    throw new InvalidDecisionError(
      `the optimization decision selects '${decision.selected}' but flags [${selected.join(", ")}]`,
    );
  }
  return decision;
}
