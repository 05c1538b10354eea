import type * as Ort from "onnxruntime-node";
import {
  AllocationTooLargeError,
  InferenceFailedError,
  InvalidRequestError,
  type MaasError,
  redactInternals,
} from "#core/errors.ts";
import type { NamedTensor, OrtElementType, TensorData } from "./tensor.ts";

/** Our tensors as onnxruntime feeds (the typed arrays are shared, not copied). */
export function toOrtFeeds(ort: typeof Ort, inputs: readonly NamedTensor[]): Record<string, Ort.Tensor> {
  const feeds: Record<string, Ort.Tensor> = {};
  for (const input of inputs) {
    feeds[input.name] = new ort.Tensor(input.type, input.data as Ort.Tensor.DataType, input.dims as number[]);
  }
  return feeds;
}

/** onnxruntime's results, in the order the outputs were asked for. */
export function fromOrtResults(
  results: Ort.InferenceSession.OnnxValueMapType,
  outputs: readonly string[],
): NamedTensor[] {
  return outputs.map((name) => {
    const tensor = results[name] as Ort.Tensor;
    return { name, type: tensor.type as OrtElementType, dims: tensor.dims, data: tensor.data as TensorData };
  });
}

/**
 * Runs `session` on our tensors for `outputs`. Every output, as most requests ask, goes through
 * onnxruntime's own default, without its name checks.
 */
export async function runOrtSession(
  ort: typeof Ort,
  session: Ort.InferenceSession,
  inputs: readonly NamedTensor[],
  outputs: readonly string[],
): Promise<NamedTensor[]> {
  const feeds = toOrtFeeds(ort, inputs);
  const results =
    outputs.length === session.outputNames.length
      ? await session.run(feeds)
      : await session.run(feeds, outputs as string[]);
  return fromOrtResults(results, outputs);
}

/** How one onnxruntime run failure is answered: the caller's (400, 413 past memory limits), or ours (500). */
export type OrtRunFailure = { readonly status: 400 | 413 } | { readonly status: 500 };

/** A device or runtime failure: ours, even inside a node that the caller's input reached. */
const INTERNAL_ORT_FAILURE =
  /CUDA|CUDNN|CUBLAS|TensorRT|\bEP_FAIL\b|NOT_IMPLEMENTED|ENGINE_ERROR|MODEL_LOADED|NO_SUCHFILE/i;
/** Sizes computed from the inputs that no memory holds: the allocation refused, or its size overflowed. */
const ALLOCATION_FAILURE =
  /Failed to allocate memory|bfc_arena|BFCArena|bad_alloc|Integer overflow|SafeIntOnOverflow/i;
/**
 * The inputs' fault: a shape or dimension that cannot hold, an index out of range, a wrong type, or a
 * kernel that refused them. A session that loaded has passed its graph checks, so a node failing at
 * run time failed on what it was given.
 */
const CALLER_ORT_FAILURE =
  /INVALID_ARGUMENT|Got invalid dimensions|Invalid rank|Invalid input shape|invalid dimension|out of (data )?bounds|must be within|must be >= 0|cannot be reshaped|Unexpected input data type|is missing in 'feeds'|Non-zero status code returned while running \w+ node/i;

export function classifyOrtFailure(message: string): OrtRunFailure {
  if (INTERNAL_ORT_FAILURE.test(message)) return { status: 500 };
  if (ALLOCATION_FAILURE.test(message)) return { status: 413 };
  return { status: CALLER_ORT_FAILURE.test(message) ? 400 : 500 };
}

/**
 * Whether an onnxruntime failure is the caller's tensor problem (a shape that cannot hold, an index
 * out of range, a size no memory holds): a 4xx wherever the model runs, Lambda or the GPU container.
 */
export function isCallerOrtError(message: string): boolean {
  return classifyOrtFailure(message).status !== 500;
}

/** `path/file.cc:123 <C++ signature>` before the status text: where in onnxruntime, not what. */
const ORT_SOURCE_FRAME =
  /(?:\S*\/)?[\w.-]+\.(?:cc|cpp|h|hpp|cu|cuh|inl):\d+(?:\s+(?:(?:static|virtual|inline|const|[\w:<>,]+[*&]*)\s+)*[\w:<>,~]*::~?\w+\([^()]*\)(?:\s*const)?)?\s*/g;
/** A C++ name that survived (`onnxruntime::TensorShape`). */
const QUALIFIED_NAME = /\b(?:\w+(?:<[^<>\s]*>)?::)+~?\w+(?:<[^<>\s]*>)?/g;

/** onnxruntime's message, shortened to what a caller can act on: its first line, no source frames. */
export function callerOrtMessage(message: string): string {
  const firstLine = message.split("\n", 1)[0] ?? "";
  return redactInternals(
    firstLine
      .replace(ORT_SOURCE_FRAME, "")
      .replace(QUALIFIED_NAME, "")
      .replace(/\s{2,}/g, " ")
      .trim(),
  );
}

/**
 * The error a failed run answers with. The caller's gets a short, safe message (the full one rides
 * as its cause, for the logs); ours gets a generic one.
 */
export function ortRunError(error: unknown): MaasError {
  const message = error instanceof Error ? error.message : String(error);
  const { status } = classifyOrtFailure(message);
  if (status === 500)
    return new InferenceFailedError("inference failed: onnxruntime could not run the model", {
      cause: error,
    });
  const safe = `the model rejected the inputs: ${callerOrtMessage(message)}`;
  return status === 413
    ? new AllocationTooLargeError(safe, { cause: error })
    : new InvalidRequestError(safe, { cause: error });
}
