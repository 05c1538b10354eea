import type { ModelVersion, Variant } from "#core/model.ts";
import { ORIGINAL_VARIANT } from "#core/model.ts";

/** What selection looks at for each variant that passed the parity gate. */
export interface SelectionCandidate {
  readonly kind: string;
  readonly passed: boolean;
  /** Outputs equal to the original's within float32 tolerance, and a kind that is not lossy by construction. */
  readonly lossless: boolean;
  readonly p50Ms?: number;
  /** Fraction of interleaved rounds in which it ran faster than the original. */
  readonly winRate?: number;
}

export interface SelectionOptions {
  readonly minSpeedup: number;
  readonly minWinRate?: number;
  /** The manifest's `pinOriginal`: the original in every case. */
  readonly pinOriginal?: boolean;
  /** The manifest's `optimize.allowLossy`: lossy kinds that may be selected too. */
  readonly allowLossy?: readonly string[];
}

/**
 * The variant to serve, or undefined for the original. Only a variant that passed the gate and is
 * lossless qualifies, or a lossy one whose kind the manifest allows; of those, the fastest, if it beats
 * the original's p50 by `minSpeedup` and won at least `minWinRate` of the rounds (a p50 gap that is
 * noise wins about half of them). GPU targets keep the original: the SageMaker path serves the upload's
 * archive, so selecting a variant would promise what the endpoint does not serve.
 */
export function selectVariant(
  target: ModelVersion["target"],
  candidates: readonly SelectionCandidate[],
  originalP50Ms: number,
  options: SelectionOptions,
): string | undefined {
  if (options.pinOriginal || target === "sagemaker") return undefined;
  const allowLossy = options.allowLossy ?? [];
  let best: SelectionCandidate | undefined;
  for (const candidate of candidates) {
    if (!candidate.passed || !(candidate.lossless || allowLossy.includes(candidate.kind))) continue;
    const p50 = candidate.p50Ms;
    if (p50 === undefined || !(p50 <= originalP50Ms * (1 - options.minSpeedup))) continue;
    if ((candidate.winRate ?? 1) < (options.minWinRate ?? 0)) continue;
    if (best?.p50Ms === undefined || p50 < best.p50Ms) best = candidate;
  }
  return best?.kind;
}

/**
 * The variants with `kind` selected, as an operator chose it: a variant that was built, without error,
 * and passed the gate (what the admin route lets an operator choose), else the original (the choice
 * stays on the record for the operator to see).
 */
export function selectKind(variants: readonly Variant[], kind: string): Variant[] {
  const servable = (variant: Variant) =>
    variant.kind === ORIGINAL_VARIANT ||
    (variant.artifact !== undefined && variant.error === undefined && variant.parity?.passed !== false);
  const chosen = variants.some((variant) => variant.kind === kind && servable(variant))
    ? kind
    : ORIGINAL_VARIANT;
  return variants.map((variant) => ({ ...variant, selected: variant.kind === chosen }));
}
