/** Shared vocabulary of the registry and the serving path: datatypes, signatures, version records. */

/** Tensor datatypes of the Open Inference Protocol that this service serves. */
export const V2_DATATYPES = [
  "BOOL",
  "UINT8",
  "UINT16",
  "UINT32",
  "UINT64",
  "INT8",
  "INT16",
  "INT32",
  "INT64",
  "FP16",
  "FP32",
  "FP64",
  "BYTES",
] as const;
export type V2Datatype = (typeof V2_DATATYPES)[number];

/**
 * One dimension of a declared shape: a fixed size, -1 for an unnamed dynamic dimension, or the
 * name of a symbolic dimension (inputs sharing a name must agree on its size).
 */
export type Dim = number | string;

export interface TensorSpec {
  readonly name: string;
  readonly datatype: V2Datatype;
  readonly shape: readonly Dim[];
  /**
   * The labels of the last dimension, in order, for an output the model declared as a sequence of
   * maps (scikit-learn's ZipMap) and that is served as a tensor of the maps' values.
   */
  readonly classLabels?: readonly string[];
}

export interface ModelSignature {
  readonly inputs: readonly TensorSpec[];
  readonly outputs: readonly TensorSpec[];
}

export type VersionStatus = "registering" | "optimizing" | "ready" | "failed";
export type ServingTarget = "lambda" | "sagemaker";

/** Where a model's bytes live and what they must hash to. */
export interface ArtifactRef {
  readonly bucket: string;
  readonly key: string;
  readonly sha256: string;
  readonly bytes: number;
}

export interface Variant {
  readonly kind: string;
  readonly bytes: number;
  readonly selected: boolean;
  readonly artifact?: ArtifactRef;
  /** How the variant was made, e.g. the quantization settings or the graph optimization level. */
  readonly detail?: string;
  /** Median latency of one inference over the benchmark runs, on the optimizer's CPU. */
  readonly p50Ms?: number;
  readonly benchmarkRuns?: number;
  /** Fraction of the interleaved benchmark rounds in which it ran faster than the original. */
  readonly winRate?: number;
  /** Time to create an onnxruntime session from the file: the cold-start cost. */
  readonly loadMs?: number;
  /** The parity gate's figures against the original; absent on the original itself. */
  readonly parity?: VariantParity;
  /** Why the variant could not be built, loaded or run: such a variant is never selected. */
  readonly error?: string;
}

export interface VariantParity {
  readonly passed: boolean;
  /** Over every float output and feed. */
  readonly maxAbsDiff: number;
  /** maxAbsDiff relative to the largest absolute value the original produced (worst output). */
  readonly maxRelativeDiff: number;
  /** The lowest cosine similarity of any float output. */
  readonly cosine: number;
  /** Present when some output is classifier-shaped or a label. */
  readonly top1Agreement?: number;
  /** Rows (or labels) the top-1 figure is over. */
  readonly top1Rows?: number;
  /** Which threshold a failing variant missed. */
  readonly reason?: string;
  /**
   * Outputs equal to the original's within float32 tolerance on the parity inputs, and a kind that is
   * not lossy by construction (int8, fp16 never are): only such a variant is selected without a person.
   */
  readonly lossless?: boolean;
  /** Whether the gate ran on the manifest's samples or on inputs generated from the signature. */
  readonly inputs: "samples" | "generated";
}

/** The upload a version was registered from, so replays and overwrites can be told apart. */
export interface UploadSource {
  readonly key: string;
  readonly etag: string;
}

/**
 * What a version does with text or images instead of tensors (issue 19): set by registration from the
 * manifest's `task` once it has run the whole chain on a sample.
 */
export type TaskConfig = TextTaskConfig | ImageTaskConfig;

export interface TextTaskConfig {
  readonly kind: "text-classification" | "feature-extraction";
  /** The content-addressed copy of the version's `tokenizer.json`. */
  readonly tokenizer: ArtifactRef;
  /** Rows are truncated to this many tokens. */
  readonly maxLength: number;
  /** The model output the task reads: logits or probabilities, or hidden states or embeddings. */
  readonly output: string;
  /** feature-extraction: how token states become one vector (when the output is per token). */
  readonly pooling: "mean" | "cls";
  /** feature-extraction: L2-normalize the embedding. */
  readonly normalize: boolean;
  /** text-classification: the output is already a probability distribution (no softmax on top). */
  readonly probabilities: boolean;
}

export interface ImageTaskConfig {
  readonly kind: "image-classification";
  /** The model input the pixels feed. */
  readonly input: string;
  /** How an encoded image becomes that input's rows. */
  readonly image: ImageSpec;
  /** The model output holding the class scores. */
  readonly output: string;
  /** The output is already a probability distribution (no softmax on top). */
  readonly probabilities: boolean;
}

/** Pre-processing of an image: decode as RGB, resize, divide by `scale`, `(x - mean) / std`, lay out. */
export interface ImageSpec {
  /** [height, width] the image is resized to. */
  readonly size: readonly [number, number];
  /** stretch: to size, aspect ignored; cover: scaled to fill, then centre-cropped; contain: scaled to fit, padded with black. */
  readonly resize: "stretch" | "cover" | "contain";
  /** Per channel, in the order of `channels`. */
  readonly mean: readonly [number, number, number];
  readonly std: readonly [number, number, number];
  readonly scale: number;
  readonly layout: "NCHW" | "NHWC";
  readonly channels: "RGB" | "BGR";
}

/** A version's payload capture (SageMaker Data Capture's equivalent). */
export interface CaptureSettings {
  /** Of the version's infer requests, the share captured: 0 to 100. */
  readonly samplePercent: number;
  /** Capture the request bodies. */
  readonly requests: boolean;
  /** Capture the response bodies. */
  readonly responses: boolean;
}

export interface ModelVersion {
  readonly name: string;
  readonly version: number;
  readonly status: VersionStatus;
  readonly reason?: string;
  readonly target: ServingTarget;
  /** The verified, content-addressed copy of the upload; absent until registration has read it. */
  readonly artifact?: ArtifactRef;
  /** Absent while registering, and on versions that failed before their model could be read. */
  readonly signature?: ModelSignature;
  readonly variants: readonly Variant[];
  /** Class labels of a classifier, from the manifest or the model's metadata. */
  readonly labels?: readonly string[];
  /**
   * What is unusual about the model that onnxruntime still runs (an operator set it only keeps
   * working, an output served in another form): shown to the publisher, never a refusal.
   */
  readonly warnings?: readonly string[];
  /**
   * A variant chosen by a person rather than by the optimizer's lossless-only rule: through the
   * manifest's `optimize.allowLossy` or an operator's admin call. `original` goes back to the upload.
   */
  readonly variantChoice?: {
    readonly kind: string;
    readonly by: "manifest" | "operator";
    readonly at: string;
  };
  readonly description?: string;
  readonly tags?: Readonly<Record<string, string>>;
  /** Sampled capture of its requests and responses to S3: from the manifest, or set by an operator. */
  readonly capture?: CaptureSettings;
  /** Text in, labels or embeddings out, beside the tensor route. */
  readonly task?: TaskConfig;
  readonly source?: UploadSource;
  /** The last upload refused because this version already existed. */
  readonly rejectedUpload?: { readonly etag: string; readonly at: string; readonly reason: string };
  /** Whether the optimize message for this version was sent: "pending" until the send succeeds. */
  readonly optimizeState?: "pending" | "queued";
  /** The optimizer's claim while `optimizing`: a retry of the same message, or a stale claim, takes it over. */
  readonly optimizeAttempt?: { readonly id: string; readonly startedAt: string; readonly error?: string };
  /** When optimization finished, whatever its outcome: a replayed message for this version does nothing. */
  readonly optimizedAt?: string;
  /** Why optimization failed; the version serves its original. */
  readonly optimizeError?: string;
  readonly createdAt: string;
  readonly updatedAt: string;
}

/** Model names are path segments and registry keys: keep them to a safe alphabet. */
export const MODEL_NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}$/;
export const ALIAS_PATTERN = /^[a-z][a-z0-9_-]{0,63}$/;
/** A JSON file a manifest names beside its model (`tokenizer.json`): a safe name, no path. */
export const SIDE_FILE_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.json$/;
/** A version number as paths and keys spell it: no sign, no leading zero, at most ten digits. */
export const VERSION_PATTERN = /^[1-9]\d{0,9}$/;

/** A version that can take traffic: registration finished, so its artifact and signature are known. */
export type ServableVersion = ModelVersion & {
  readonly status: "ready" | "optimizing";
  readonly artifact: ArtifactRef;
  readonly signature: ModelSignature;
};

/** The artifact a version is served from: the selected variant if one is, else the original. */
export function servingArtifact(version: ServableVersion): ArtifactRef {
  return version.variants.find((variant) => variant.selected)?.artifact ?? version.artifact;
}

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
