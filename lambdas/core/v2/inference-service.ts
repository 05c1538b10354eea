import {
  InvalidRequestError,
  MaasError,
  ModelNotFoundError,
  ModelNotReadyError,
  ResponseTooLargeError,
} from "#core/errors.ts";
import type { InferenceMetric } from "#core/metrics/inference-metric.ts";
import type { StatisticsScope } from "#core/metrics/statistics.ts";
import type {
  ModelSignature,
  ModelVersion,
  ServableVersion,
  ServingTarget,
  TensorSpec,
} from "#core/model.ts";
import { servingVariantKind } from "#core/model.ts";
import { assertServable, isServable, type ModelRegistry, resolveVersion } from "#core/registry/registry.ts";
import { DEFAULT_DEADLINE_MS, type ModelRunner } from "#core/runner.ts";
import { imagesOf, preprocessImages } from "#core/tasks/image.ts";
import {
  EMBEDDING_OUTPUT,
  IMAGE_INPUT,
  LABEL_OUTPUT,
  SCORE_OUTPUT,
  TEXT_INPUT,
  type TextBatch,
} from "#core/tasks/task.ts";
import {
  classificationOutputs,
  hasTask,
  type ImageTaskVersion,
  isImageTask,
  isTaskRequest,
  isTextTask,
  type TaskVersion,
  type TextTaskVersion,
  type TokenizerSource,
  taskOutputs,
  textsOf,
  tokenizerFeeds,
  topKOf,
} from "#core/tasks/text-task.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import { BINARY_DATA_EXTENSION, binaryOutputsOf, type InferBody, parseInferBody } from "./binary-data.ts";
import { checkInputs, selectOutputs } from "./signature.ts";
import { decodeInput, ortTypeOf, outputJsonFloor, type TensorResponse } from "./tensor-codec.ts";
import type { ModelMetadataParameters, ModelMetadataResponse, RequestInput, TensorMetadata } from "./wire.ts";

/**
 * A runner, and what it serves of a version when that is not the selected variant (`servingArtifact`):
 * the SageMaker runner serves the original upload's archive whatever the optimizer selected.
 */
export type ServingRunner = ModelRunner & {
  servedVariant?(version: ServableVersion): string;
};

export interface InferenceServiceDeps {
  readonly registry: ModelRegistry;
  readonly runners: Partial<Record<ServingTarget, ServingRunner>>;
  readonly server: { readonly name: string; readonly version: string };
  /**
   * The most bytes of JSON one infer response may carry (MAAS_MAX_RESPONSE_BYTES).
   * @default 6291456, Lambda's synchronous response payload
   */
  readonly maxResponseBytes?: number;
  /**
   * How long one infer request may take, lookups and the model's run included; past it the caller
   * gets a 504. Keep it under API Gateway's 29 s and the function's timeout.
   * @default 25 000 ms
   */
  readonly deadlineMs?: number;
  /** Tokenizers of text task versions (issue 19); without it their text requests answer 501. */
  readonly tokenizers?: TokenizerSource;
}

/** Lambda's synchronous response payload: 6 MB. */
export const DEFAULT_MAX_RESPONSE_BYTES = 6 * 1024 * 1024;

export interface InferOutcome {
  readonly response: TensorResponse;
  readonly version: ModelVersion;
  readonly backend: ServingTarget;
  /** The kind of the artifact that answered (`original`, `int8-dynamic`...): the `x-maas-variant` header. */
  readonly variant: string;
  /** Which outputs the caller asked for as binary data (the binary tensor data extension). */
  readonly binaryOutputs: (output: string) => boolean;
}

/** The variant a runner serves of a version: from the record already resolved, no further lookup. */
function servedVariant(runner: ServingRunner | undefined, version: ServableVersion): string {
  return runner?.servedVariant?.(version) ?? servingVariantKind(version);
}

/** Metadata's `parameters`: the variant serving, and the class labels of the outputs that carry them. */
function metadataParameters(variant: string, outputs: readonly TensorSpec[]): ModelMetadataParameters {
  let classLabels: Record<string, readonly string[]> | undefined;
  for (const output of outputs) {
    if (output.classLabels === undefined) continue;
    classLabels ??= {};
    classLabels[output.name] = output.classLabels;
  }
  return classLabels === undefined ? { variant } : { variant, class_labels: classLabels };
}

/** A task version's text or image route, as metadata shows it beside the tensors. */
function describeTask(version: TaskVersion): NonNullable<ModelMetadataParameters["task"]> {
  const { kind } = version.task;
  const outputs =
    kind === "feature-extraction"
      ? [{ name: EMBEDDING_OUTPUT, datatype: "FP32", shape: [-1, -1] }]
      : [
          { name: LABEL_OUTPUT, datatype: "BYTES", shape: [-1, -1] },
          { name: SCORE_OUTPUT, datatype: "FP32", shape: [-1, -1] },
        ];
  const input = kind === "image-classification" ? IMAGE_INPUT : TEXT_INPUT;
  return { name: kind, inputs: [{ name: input, datatype: "BYTES", shape: [-1] }], outputs };
}

/** What a V2 metadata response shows of a declared shape: symbolic dims are -1. */
function describeTensor(spec: TensorSpec): TensorMetadata {
  return {
    name: spec.name,
    datatype: spec.datatype,
    shape: spec.shape.map((dim) => (typeof dim === "number" ? dim : -1)),
  };
}

/**
 * Refuses (413) outputs whose JSON must pass `limit` by their shapes alone: dims fixed in the signature,
 * or symbolic dims an input of the request binds. Outputs of any other shape count for nothing here.
 */
function assertOutputsCanFit(
  signature: ModelSignature,
  outputs: readonly string[],
  inputs: readonly RequestInput[],
  inputSpecs: readonly TensorSpec[],
  limit: number,
): void {
  let total = 0;
  for (const spec of signature.outputs) {
    if (!outputs.includes(spec.name)) continue;
    const elements = boundElementCount(spec.shape, inputs, inputSpecs);
    if (elements === undefined) continue;
    total += outputJsonFloor(spec.name, elements, ortTypeOf(spec.datatype), limit);
  }
  if (total > limit) {
    throw new ResponseTooLargeError(
      `the outputs asked for take at least ${total} bytes of JSON; they would`,
      limit,
    );
  }
}

/** An output's element count where every dim is fixed or bound by an input; undefined otherwise. */
function boundElementCount(
  shape: TensorSpec["shape"],
  inputs: readonly RequestInput[],
  inputSpecs: readonly TensorSpec[],
): number | undefined {
  let count = 1;
  for (const dim of shape) {
    const size = typeof dim === "number" ? dim : boundDim(dim, inputs, inputSpecs);
    if (size === undefined || size < 0) return undefined;
    count *= size;
  }
  return count;
}

/** The size a symbolic dim takes in the request: checkInputs has made every input that has it agree. */
function boundDim(
  dim: string,
  inputs: readonly RequestInput[],
  inputSpecs: readonly TensorSpec[],
): number | undefined {
  for (let i = 0; i < inputs.length; i++) {
    const axis = (inputSpecs[i] as TensorSpec).shape.indexOf(dim);
    if (axis >= 0) return (inputs[i] as RequestInput).shape[axis];
  }
  return undefined;
}

/** A task's pre-processing (tokenizing, image decoding) as the request's input decode phase. */
function recordPreprocessing(
  metric: InferenceMetric | undefined,
  span: string,
  mark: number,
  batchSize: number,
): void {
  if (metric === undefined) return;
  const now = performance.now();
  metric.inputDecodeUs += (now - mark) * 1000;
  metric.spans?.push({ name: span, start: mark, end: now });
  metric.batchSize = batchSize;
}

/** The Open Inference Protocol, independent of how requests arrive (API Gateway, tests, benches). */
export class InferenceService {
  readonly #deps: InferenceServiceDeps;
  readonly #maxResponseBytes: number;
  readonly #deadlineMs: number;

  constructor(deps: InferenceServiceDeps) {
    this.#deps = deps;
    this.#maxResponseBytes = deps.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    this.#deadlineMs = deps.deadlineMs ?? DEFAULT_DEADLINE_MS;
  }

  serverMetadata() {
    return {
      name: this.#deps.server.name,
      version: this.#deps.server.version,
      extensions: ["model_repository", BINARY_DATA_EXTENSION],
    };
  }

  /** Ready when the registry answers: without it no model can be resolved. */
  async ready(): Promise<{ ready: boolean }> {
    try {
      await this.#deps.registry.listModels();
      return { ready: true };
    } catch (error) {
      throw new ModelNotReadyError("the model registry is unreachable", { cause: error });
    }
  }

  async listModels() {
    const models = await this.#deps.registry.listModels();
    return {
      models: models.map((model) => ({ name: model.name, versions: model.versions.map(String) })),
    };
  }

  async modelMetadata(name: string, reference: string | undefined): Promise<ModelMetadataResponse> {
    const version = await resolveVersion(this.#deps.registry, name, reference);
    assertServable(version);
    // The unversioned route's read, which resolveVersion just made (and cached).
    const versions =
      reference === undefined ? (await this.#deps.registry.getModel(name)).versions : [version];
    return {
      name,
      versions: versions.filter(isServable).map((record) => String(record.version)),
      platform: "onnxruntime_onnx",
      inputs: version.signature.inputs.map(describeTensor),
      outputs: version.signature.outputs.map(describeTensor),
      parameters: {
        ...metadataParameters(
          servedVariant(this.#deps.runners[version.target], version),
          version.signature.outputs,
        ),
        ...(hasTask(version) ? { task: describeTask(version) } : {}),
      },
    };
  }

  /**
   * Embeddings of `texts` from a feature-extraction version (OpenAI's `/v1/embeddings`): [N, D] row-major,
   * with the tokens the texts took.
   */
  async embed(
    name: string,
    reference: string | undefined,
    texts: readonly string[],
    latest = Number.POSITIVE_INFINITY,
    metric?: InferenceMetric,
  ): Promise<{ version: ModelVersion; embedding: NamedTensor; tokenCount: number }> {
    const deadline = Math.min(Date.now() + this.#deadlineMs, latest);
    const mark = metric === undefined ? 0 : performance.now();
    const version = await resolveVersion(this.#deps.registry, name, reference);
    if (metric !== undefined) {
      metric.registryUs = (performance.now() - mark) * 1000;
      metric.model = name;
      metric.version = version.version;
      metric.backend = version.target;
    }
    assertServable(version);
    if (!isTextTask(version) || version.task.kind !== "feature-extraction") {
      throw new InvalidRequestError(
        `model '${name}' version ${version.version} is not a feature-extraction model: publish it with "task": "feature-extraction" in its manifest`,
      );
    }
    const { outputs, batch } = await this.#runText(version, texts, 1, deadline, metric, performance.now());
    return { version, embedding: outputs[0] as NamedTensor, tokenCount: batch.tokenCount };
  }

  /** The models whose default version is a servable feature-extraction one (OpenAI's `GET /v1/models`). */
  async featureExtractionModels(): Promise<{ name: string; createdAt: string }[]> {
    const models = await this.#deps.registry.listModels();
    // Each model's default version at once: a cold cache would otherwise wait on one read after another.
    const versions = await Promise.all(
      models.map((model) =>
        resolveVersion(this.#deps.registry, model.name, undefined).catch(() => undefined),
      ),
    );
    return versions.flatMap((version, index) =>
      version !== undefined && isServable(version) && version.task?.kind === "feature-extraction"
        ? [{ name: (models[index] as { name: string }).name, createdAt: version.createdAt }]
        : [],
    );
  }

  /** A text task's run: tokenize, run the model on what the tokenizer feeds, and read the task's outputs. */
  async #runText(
    version: TextTaskVersion,
    texts: readonly string[],
    topK: number,
    deadline: number,
    metric: InferenceMetric | undefined,
    mark: number,
  ): Promise<{ outputs: NamedTensor[]; batch: TextBatch }> {
    const tokenizers = this.#deps.tokenizers;
    if (tokenizers === undefined)
      throw new MaasError(501, "not_implemented", "text tasks are not served by this deployment");
    const tokenizer = await tokenizers.tokenizer(version.task.tokenizer);
    const batch = tokenizer.encode(texts, version.task.maxLength);
    recordPreprocessing(metric, "tokenize", mark, batch.batch);
    const feeds = tokenizerFeeds(version.signature, batch);
    const output = await this.#runTaskModel(version, feeds, deadline, metric);
    return { outputs: taskOutputs(version, output, batch, topK), batch };
  }

  /** An image task's run: decode and pre-process each image, run the model, and read labels and scores. */
  async #runImages(
    version: ImageTaskVersion,
    images: readonly Uint8Array[],
    topK: number,
    deadline: number,
    metric: InferenceMetric | undefined,
    mark: number,
  ): Promise<NamedTensor[]> {
    const { task } = version;
    const batch = await preprocessImages(images, task.image);
    recordPreprocessing(metric, "image decode", mark, images.length);
    const feed: NamedTensor = { name: task.input, type: "float32", dims: batch.dims, data: batch.data };
    const output = await this.#runTaskModel(version, [feed], deadline, metric);
    return classificationOutputs(version, output, images.length, topK, task.probabilities);
  }

  /** Runs a task version's model on the task's feeds for the one output the task reads. */
  async #runTaskModel(
    version: TaskVersion,
    feeds: NamedTensor[],
    deadline: number,
    metric: InferenceMetric | undefined,
  ): Promise<NamedTensor> {
    const ran = performance.now();
    const [output] = await this.#runnerFor(version).run(version, feeds, [version.task.output], {
      deadline,
      timings: metric,
    });
    if (metric !== undefined && metric.inferUs === 0) metric.inferUs = (performance.now() - ran) * 1000;
    if (output === undefined) throw new Error(`the model gave no output '${version.task.output}'`);
    return output;
  }

  /**
   * Ready means the version can answer now: servable in the registry, and loaded by its runner (which
   * loads it if needed, so a probe also warms it), or a 503 saying why not (an artifact lost, say).
   */
  async modelReady(name: string, reference: string | undefined) {
    const version = await resolveVersion(this.#deps.registry, name, reference);
    assertServable(version);
    await this.#runnerFor(version).load?.(version);
    return { name, version: String(version.version), ready: true };
  }

  /**
   * `body`: JSON text, or bytes with a JSON header (the binary tensor data extension).
   * `latest`: a Date.now() time the caller must answer by (Lambda's remaining time), if sooner than ours.
   * `metric`: filled in as the request goes (its model version once resolved, the registry, input
   * decoding and run phases), for the caller to record once it has answered.
   */
  async infer(
    name: string,
    reference: string | undefined,
    body: InferBody,
    latest = Number.POSITIVE_INFINITY,
    metric?: InferenceMetric,
  ): Promise<InferOutcome> {
    const deadline = Math.min(Date.now() + this.#deadlineMs, latest);
    let mark = metric === undefined ? 0 : performance.now();
    const version = await resolveVersion(this.#deps.registry, name, reference);
    if (metric !== undefined) {
      const now = performance.now();
      metric.registryUs = (now - mark) * 1000;
      metric.spans?.push({ name: "registry", start: mark, end: now });
      mark = now;
      // Known from here on, servable or not: a failed version's 503s count against it.
      metric.model = name;
      metric.version = version.version;
      metric.backend = version.target;
    }
    assertServable(version);
    const runner = this.#runnerFor(version);
    const request = parseInferBody(body);
    const binaryOutputs = binaryOutputsOf(request);
    const answer = (outputs: NamedTensor[]): InferOutcome => ({
      version,
      backend: runner.backend,
      variant: servedVariant(runner, version),
      binaryOutputs,
      response: {
        model_name: name,
        model_version: String(version.version),
        ...(request.id === undefined ? {} : { id: request.id }),
        outputs,
        maxBytes: this.#maxResponseBytes,
      },
    });
    if (hasTask(version) && isTaskRequest(version, request)) {
      const input = request.inputs[0] as RequestInput;
      const topK = topKOf(request);
      if (isImageTask(version)) {
        const images = imagesOf(input.shape, input.datatype, input.data);
        return answer(await this.#runImages(version, images, topK, deadline, metric, mark));
      }
      if (isTextTask(version)) {
        const texts = textsOf(decodeInput(input));
        return answer((await this.#runText(version, texts, topK, deadline, metric, mark)).outputs);
      }
    }
    const inputSpecs = checkInputs(request.inputs, version.signature);
    const outputs = selectOutputs(request.outputs, version.signature);
    // Before running: a response that cannot be sent is not worth the model's time or memory.
    assertOutputsCanFit(version.signature, outputs, request.inputs, inputSpecs, this.#maxResponseBytes);
    const inputs = request.inputs.map(decodeInput);
    if (metric !== undefined) {
      const now = performance.now();
      metric.inputDecodeUs += (now - mark) * 1000;
      metric.spans?.push({ name: "input decode", start: mark, end: now });
      mark = now;
      metric.batchSize = request.inputs[0]?.shape[0] ?? 1;
    }

    const results = await runner.run(version, inputs, outputs, { deadline, timings: metric });
    // A runner that reports no phases of its own (SageMaker's): its whole call is the run.
    if (metric !== undefined && metric.inferUs === 0) {
      const ran = performance.now();
      metric.inferUs = (ran - mark) * 1000;
      metric.spans?.push({ name: "run", start: mark, end: ran });
    }
    return answer(results);
  }

  /**
   * The model versions a statistics request covers (the statistics extension): every version of every
   * model, every version of `name`, or the one `reference` names (a number or an alias). 404 for a model
   * or version the registry does not know.
   */
  async statisticsScope(name: string | undefined, reference: string | undefined): Promise<StatisticsScope> {
    if (name === undefined) return this.#deps.registry.listModels();
    if (reference !== undefined) {
      const version = await resolveVersion(this.#deps.registry, name, reference);
      return [{ name, versions: [version.version] }];
    }
    const { versions } = await this.#deps.registry.getModel(name);
    if (versions.length === 0) throw new ModelNotFoundError(`model '${name}' not found`);
    return [{ name, versions: versions.map((record) => record.version) }];
  }

  /**
   * Loads each model's serving version (the unversioned route's choice) ahead of traffic. A model that
   * cannot load is reported, not thrown: one bad name must not fail a whole environment's start.
   */
  async preload(names: readonly string[]): Promise<{ name: string; version?: number; error?: string }[]> {
    return Promise.all(
      names.map(async (name) => {
        try {
          const version = await resolveVersion(this.#deps.registry, name, undefined);
          assertServable(version);
          await this.#runnerFor(version).load?.(version);
          return { name, version: version.version };
        } catch (error) {
          return { name, error: (error as Error).message };
        }
      }),
    );
  }

  #runnerFor(version: ModelVersion): ServingRunner {
    const runner = this.#deps.runners[version.target];
    if (runner === undefined) {
      throw new ModelNotReadyError(
        `model '${version.name}' version ${version.version} is served by ${version.target}, which this deployment has not configured`,
      );
    }
    return runner;
  }
}
