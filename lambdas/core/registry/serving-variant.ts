import type { ModelVersion } from "#core/model.ts";

/** The variant kind that names the upload itself: what a version serves until a variant is selected. */
export const ORIGINAL_VARIANT = "original";

/**
 * The kind of the variant `servingArtifact` serves: the selected variant when it was built, else the
 * original. Read from the record the request already resolved, so naming it costs no lookup.
 */
export function servingVariantKind(version: Pick<ModelVersion, "variants">): string {
  for (const variant of version.variants) {
    if (variant.selected) return variant.artifact === undefined ? ORIGINAL_VARIANT : variant.kind;
  }
  return ORIGINAL_VARIANT;
}
