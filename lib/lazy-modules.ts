/**
 * Packages the inference and jobs handlers load on first use only, bundled beside them rather than in
 * them, so that cold starts do not parse them: the SageMaker client (sagemaker-target requests),
 * asynchronous inference's clients (its routes and jobs), the tokenizer library (text tasks) and the
 * ONNX decoder (inline runs' check). Bundled in, the AWS clients took the inference handler's import
 * from 85 to 247 ms. The bench bundles the handler the same way.
 */
export const LAZY_MODULES = [
  "@aws-sdk/client-sagemaker-runtime",
  "@aws-sdk/client-s3",
  "@aws-sdk/client-dynamodb",
  "@aws-sdk/lib-dynamodb",
  "@aws-sdk/client-sqs",
  "@aws-sdk/s3-request-presigner",
  "@aws-sdk/lib-storage",
  // Text task versions' tokenizers (issue 19): parsed only when a text model is first served.
  "@huggingface/tokenizers",
  // The ONNX schema's decoder: parsed only when a small model is checked for inline runs.
  "onnx-proto",
] as const;
