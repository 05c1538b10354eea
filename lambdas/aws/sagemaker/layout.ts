/**
 * Layout of the SageMaker model prefix (the multi-model endpoint's `ModelDataUrl`):
 *
 *   <prefix><sha256>.tar.gz      one per distinct model file, containing `model.onnx`
 *
 * The `TargetModel` of an InvokeEndpoint call is the object's name relative to the prefix, so it is
 * derived from the artifact digest alone: nothing more needs storing in the registry, identical
 * uploads share one object, and an object never changes once written. No SDK imports here: the
 * inference function needs the names without the S3 client that publishes the archives.
 */
export function targetModelFor(sha256: string): string {
  return `${sha256}.tar.gz`;
}

/** Normalizes a prefix to end with exactly one `/` (or be empty, for the bucket root). */
export function normalizePrefix(prefix: string): string {
  const trimmed = prefix.replace(/^\/+|\/+$/g, "");
  return trimmed === "" ? "" : `${trimmed}/`;
}
