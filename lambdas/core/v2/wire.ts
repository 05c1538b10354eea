import * as z from "zod/mini";

/** Wire types of the Open Inference Protocol (KServe V2 / Triton), JSON encoding. */

const parameters = z.record(z.string(), z.unknown());
const name = z.string().check(z.minLength(1));

export const requestInputSchema = z.object({
  name,
  shape: z.array(z.int().check(z.nonnegative())),
  datatype: z.string().check(z.minLength(1)),
  parameters: z.optional(parameters),
  // Elements are checked by the codec in one pass; a zod array of a million numbers would double the work.
  // Absent when the input's bytes follow the JSON header (parameters.binary_data_size).
  data: z.optional(z.unknown()),
});

export const requestOutputSchema = z.object({
  name,
  parameters: z.optional(parameters),
});

export const inferRequestSchema = z.object({
  id: z.optional(z.string()),
  parameters: z.optional(parameters),
  inputs: z.array(requestInputSchema).check(z.minLength(1)),
  outputs: z.optional(z.array(requestOutputSchema)),
});

export type InferRequest = z.infer<typeof inferRequestSchema>;
export type RequestInput = z.infer<typeof requestInputSchema>;

export interface ResponseOutput {
  readonly name: string;
  readonly datatype: string;
  readonly shape: readonly number[];
  readonly data: readonly unknown[];
}

export interface TensorMetadata {
  readonly name: string;
  readonly datatype: string;
  readonly shape: readonly number[];
}

/** What this service adds to a model's metadata, in the protocol's free-form `parameters` object. */
export interface ModelMetadataParameters {
  /** The kind of the artifact that answers infer requests, as the `x-maas-variant` header names it. */
  readonly variant: string;
  /** The labels of each output that has them (the last dimension of a classifier's scores), by output name. */
  readonly class_labels?: Readonly<Record<string, readonly string[]>>;
  /** A task version's text route: the task, and the inputs and outputs it takes and gives beside the tensors. */
  readonly task?: {
    readonly name: string;
    readonly inputs: readonly TensorMetadata[];
    readonly outputs: readonly TensorMetadata[];
  };
}

export interface ModelMetadataResponse {
  readonly name: string;
  readonly versions: readonly string[];
  readonly platform: string;
  readonly inputs: readonly TensorMetadata[];
  readonly outputs: readonly TensorMetadata[];
  readonly parameters: ModelMetadataParameters;
}

export function describeZodError(error: z.core.$ZodError): string {
  const issue = error.issues[0];
  if (issue === undefined) return "invalid request";
  const path = issue.path
    .map((segment, index) =>
      typeof segment === "number" ? `[${segment}]` : `${index ? "." : ""}${String(segment)}`,
    )
    .join("");
  return path ? `${path}: ${issue.message}` : issue.message;
}
