import { randomBytes } from "node:crypto";
import {
  InvalidRequestError,
  MaasError,
  PayloadTooLargeError,
  ResponseTooLargeError,
  redactInternals,
} from "#core/errors.ts";
import { assertServable, type ModelRegistry, resolveVersion } from "#core/registry/registry.ts";
import {
  BINARY_CONTENT_TYPE,
  encodeInferResponse,
  HEADER_LENGTH_HEADER,
  type InferBody,
  parseInferBody,
} from "#core/v2/binary-data.ts";
import type { InferenceService } from "#core/v2/inference-service.ts";
import { parseJsonBody } from "#core/v2/parse.ts";
import { JOB_KEYS, type Job, type JobObjects, type JobQueue, type JobStatus, type JobStore } from "./jobs.ts";

/**
 * Asynchronous inference, as SageMaker's asynchronous endpoints offer it, on the V2 route: a caller
 * uploads a body of any size (up to `maxInputBytes`) to a presigned URL, submits a job that names it
 * (or sends the request inline), and polls the job for a presigned URL of the V2 response. Jobs are run
 * by a worker fed by a queue (JobRunner); records and objects expire after `retentionDays`.
 */

export interface AsyncInferenceOptions {
  readonly registry: ModelRegistry;
  readonly store: JobStore;
  readonly objects: JobObjects;
  readonly queue: JobQueue;
  /** The bucket uploads go to, named in `input_uri`. */
  readonly bucket: string;
  /** Lifetime of presigned URLs. @default 3600 */
  readonly urlExpiresSeconds?: number;
  /** @default 1 GiB, as SageMaker asynchronous inference takes */
  readonly maxInputBytes?: number;
  /** @default 7 */
  readonly retentionDays?: number;
  readonly now?: () => number;
}

/** What `POST /v2/uploads` answers: one URL for a PUT, or the parts of a multipart upload. */
export type UploadTicket = {
  readonly url?: string;
  readonly input_uri: string;
  readonly expires_in: number;
  readonly upload_id?: string;
  readonly part_urls?: readonly string[];
  readonly complete_url?: string;
};

/** What `GET /v2/jobs/<id>` answers. */
export interface JobView {
  readonly id: string;
  readonly model_name: string;
  readonly model_version: string;
  readonly status: JobStatus;
  readonly created_at: string;
  readonly updated_at: string;
  readonly error?: string;
  readonly output_url?: string;
  readonly output_content_type?: string;
  /** For a binary result: the length of its JSON header, which the presigned GET cannot send as a header. */
  readonly inference_header_content_length?: number;
  readonly expires_in?: number;
}

const GiB = 1024 ** 3;
/** S3's most parts in one multipart upload. */
const MAX_PARTS = 10_000;

/** A job id: 128 random bits, URL-safe. */
function newJobId(): string {
  return randomBytes(16).toString("base64url");
}

const JOB_ID = /^[A-Za-z0-9_-]{22}$/;

export class AsyncInference {
  readonly #options: AsyncInferenceOptions;
  readonly #expires: number;
  readonly #maxInputBytes: number;
  readonly #now: () => number;

  constructor(options: AsyncInferenceOptions) {
    this.#options = options;
    this.#expires = options.urlExpiresSeconds ?? 3600;
    this.#maxInputBytes = options.maxInputBytes ?? GiB;
    this.#now = options.now ?? Date.now;
  }

  /**
   * A place to upload a request body: a presigned PUT, or with `parts` (for bodies over 5 GB, or a
   * store that refuses large single requests) presigned part uploads and the URL that completes them.
   */
  async upload(body: string): Promise<UploadTicket> {
    const parts = uploadParts(body);
    const key = `${JOB_KEYS.inputPrefix}${newJobId()}`;
    const input_uri = `s3://${this.#options.bucket}/${key}`;
    if (parts === undefined) {
      return {
        url: await this.#options.objects.presignPut(key, this.#expires),
        input_uri,
        expires_in: this.#expires,
      };
    }
    const multipart = await this.#options.objects.presignMultipart(key, parts, this.#expires);
    return {
      input_uri,
      expires_in: this.#expires,
      upload_id: multipart.uploadId,
      part_urls: multipart.partUrls,
      complete_url: multipart.completeUrl,
    };
  }

  /**
   * Submits a job for the model: `body` is an infer request (kept as sent, JSON or binary), or JSON
   * `{"input_uri", "inference_header_content_length"?}` naming an uploaded one. The version is resolved
   * now and the job runs it, whatever aliases do meanwhile. `owner`: the API key that may read the job.
   */
  async submit(
    name: string,
    reference: string | undefined,
    body: InferBody,
    owner: string | undefined,
  ): Promise<{ id: string; status: JobStatus }> {
    const version = await resolveVersion(this.#options.registry, name, reference);
    assertServable(version);
    const id = newJobId();
    const uploaded = typeof body === "string" ? uploadedInput(body) : undefined;
    let input: Job["input"];
    if (uploaded !== undefined) {
      const key = this.#ownKey(uploaded.uri);
      const size = await this.#options.objects.size(key);
      if (size === undefined)
        throw new InvalidRequestError(
          `nothing was uploaded to ${uploaded.uri}; PUT the request body to the URL that POST /v2/uploads gave, then submit`,
        );
      if (size > this.#maxInputBytes) throw inputTooLarge(size, this.#maxInputBytes);
      input = {
        key,
        ...(uploaded.headerLength === undefined ? {} : { headerLength: uploaded.headerLength }),
      };
    } else {
      // Refused now rather than as a failed job: the request is here to check.
      parseInferBody(body);
      const key = `${JOB_KEYS.inputPrefix}${id}`;
      await this.#options.objects.put(
        key,
        typeof body === "string" ? body : body.bytes,
        typeof body === "string" ? "application/json" : BINARY_CONTENT_TYPE,
      );
      input = { key, ...(typeof body === "string" ? {} : { headerLength: body.headerLength }) };
    }
    const now = this.#now();
    const job: Job = {
      id,
      model_name: name,
      model_version: version.version,
      status: "queued",
      ...(owner === undefined ? {} : { owner }),
      input,
      attempts: 0,
      created_at: now,
      updated_at: now,
      expires_at: Math.ceil(now / 1000) + (this.#options.retentionDays ?? 7) * 86_400,
    };
    await this.#options.store.create(job);
    try {
      await this.#options.queue.send(id);
    } catch (error) {
      await this.#options.store.update(id, ["queued"], {
        status: "failed",
        error: "the job could not be queued; submit it again",
        updated_at: this.#now(),
      });
      throw error;
    }
    return { id, status: "queued" };
  }

  /** A job as its owner sees it; another key's job, or an expired one, is not found. */
  async status(id: string, owner: string | undefined): Promise<JobView> {
    const job = JOB_ID.test(id) ? await this.#options.store.get(id) : undefined;
    if (job === undefined || job.owner !== owner || job.expires_at * 1000 < this.#now())
      throw new MaasError(404, "job_not_found", `job '${id}' not found`);
    const view: JobView = {
      id: job.id,
      model_name: job.model_name,
      model_version: String(job.model_version),
      status: job.status,
      created_at: new Date(job.created_at).toISOString(),
      updated_at: new Date(job.updated_at).toISOString(),
      ...(job.error === undefined ? {} : { error: job.error }),
    };
    if (job.status !== "succeeded" || job.output === undefined) return view;
    return {
      ...view,
      output_url: await this.#options.objects.presignGet(job.output.key, this.#expires),
      output_content_type: job.output.contentType,
      ...(job.output.headerLength === undefined
        ? {}
        : { inference_header_content_length: job.output.headerLength }),
      expires_in: this.#expires,
    };
  }

  /** An `input_uri` must name an upload of this service: never a model, an artifact or another bucket. */
  #ownKey(uri: string): string {
    const prefix = `s3://${this.#options.bucket}/${JOB_KEYS.inputPrefix}`;
    const rest = uri.startsWith(prefix) ? uri.slice(prefix.length) : "";
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(rest))
      throw new InvalidRequestError(`input_uri must be an upload URI from POST /v2/uploads (${prefix}...)`);
    return `${JOB_KEYS.inputPrefix}${rest}`;
  }
}

function inputTooLarge(size: number, limit: number): PayloadTooLargeError {
  return new PayloadTooLargeError(
    `the uploaded input is ${size} bytes; asynchronous inference takes at most ${limit} bytes (MAAS_ASYNC_MAX_INPUT_BYTES)`,
  );
}

/** `POST /v2/uploads`'s optional body: `{"parts": N}` asks for a multipart upload. */
function uploadParts(body: string): number | undefined {
  if (body.trim() === "") return undefined;
  const json = parseJsonBody(body) as { parts?: unknown } | null;
  const parts = typeof json === "object" && json !== null ? json.parts : undefined;
  if (parts === undefined) return undefined;
  if (typeof parts !== "number" || !Number.isInteger(parts) || parts < 1 || parts > MAX_PARTS)
    throw new InvalidRequestError(`parts must be an integer from 1 to ${MAX_PARTS}`);
  return parts;
}

/** The `{"input_uri": ...}` form of an asynchronous infer body, or undefined for an inline request. */
function uploadedInput(body: string): { uri: string; headerLength?: number } | undefined {
  if (!body.includes('"input_uri"')) return undefined;
  const json = parseJsonBody(body) as Record<string, unknown> | null;
  if (typeof json !== "object" || json === null || Array.isArray(json) || json.input_uri === undefined)
    return undefined;
  if (typeof json.input_uri !== "string") throw new InvalidRequestError("input_uri must be a string");
  const headerLength = json.inference_header_content_length;
  if (
    headerLength !== undefined &&
    (typeof headerLength !== "number" || !Number.isSafeInteger(headerLength) || headerLength < 1)
  )
    throw new InvalidRequestError("inference_header_content_length must be a positive integer");
  return { uri: json.input_uri, ...(headerLength === undefined ? {} : { headerLength }) };
}

export interface JobRunnerOptions {
  readonly store: JobStore;
  readonly objects: JobObjects;
  /** The V2 service that runs requests, with the worker's own limits (result size, deadline). */
  readonly service: InferenceService;
  /** Receives of a job's message after which a failure that could pass is final. */
  readonly maxReceives: number;
  readonly now?: () => number;
}

export type JobOutcome = "succeeded" | "failed" | "skipped";

/**
 * Runs queued jobs, at least once each: a job already ended is skipped, its result is written once
 * under its own key, a caller's mistake fails it at once, and anything else fails it only on the
 * message's last receive (throwing before that, for the queue to deliver it again).
 */
export class JobRunner {
  readonly #options: JobRunnerOptions;
  readonly #now: () => number;

  constructor(options: JobRunnerOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /** `latest`: the Date.now() time by which the run must end (the worker's remaining time). */
  async run(id: string, receiveCount: number, latest: number): Promise<JobOutcome> {
    const { store, objects, service } = this.#options;
    const job = await store.get(id);
    if (job === undefined || job.status === "succeeded" || job.status === "failed") return "skipped";
    const started = await store.update(id, ["queued", "running"], {
      status: "running",
      attempts: job.attempts + 1,
      updated_at: this.#now(),
    });
    if (!started) return "skipped";
    try {
      const bytes = await objects.get(job.input.key);
      const body: InferBody =
        job.input.headerLength === undefined
          ? bytes.toString("utf8")
          : { bytes, headerLength: job.input.headerLength };
      const outcome = await service.infer(job.model_name, String(job.model_version), body, latest);
      const encoded = encodeInferResponse(outcome.response, outcome.binaryOutputs);
      const key = `${JOB_KEYS.resultPrefix}${id}`;
      const output =
        "json" in encoded
          ? { key, contentType: "application/json" }
          : { key, contentType: BINARY_CONTENT_TYPE, headerLength: encoded.headerLength };
      await objects.put(key, "json" in encoded ? encoded.json : encoded.bytes, output.contentType, {
        ...(output.headerLength === undefined ? {} : { [HEADER_LENGTH_HEADER]: String(output.headerLength) }),
      });
      // False when the dead-letter consumer ended the job meanwhile: its record stands.
      const recorded = await store.update(id, ["running"], {
        status: "succeeded",
        output,
        updated_at: this.#now(),
      });
      return recorded ? "succeeded" : "skipped";
    } catch (error) {
      const final =
        (error instanceof MaasError && error.status < 500) || receiveCount >= this.#options.maxReceives;
      if (!final) {
        await store.update(id, ["running"], { status: "queued", updated_at: this.#now() });
        throw error;
      }
      await store.update(id, ["running"], {
        status: "failed",
        error: failureMessage(error),
        updated_at: this.#now(),
      });
      return "failed";
    }
  }

  /** A message that reached the dead-letter queue: its job ends `failed` if nothing ended it. */
  async abandon(id: string, receives: number): Promise<void> {
    await this.#options.store.update(id, ["queued", "running"], {
      status: "failed",
      error: `the job failed ${receives} times without an answer (the worker crashed or timed out); submit it again`,
      updated_at: this.#now(),
    });
  }
}

function failureMessage(error: unknown): string {
  // The synchronous limit's advice (binary outputs, or this very route) does not fit a job.
  if (error instanceof ResponseTooLargeError)
    return `the response would exceed the job result limit of ${error.limitBytes} bytes (MAAS_ASYNC_MAX_RESULT_BYTES): request fewer rows or other outputs`;
  if (error instanceof MaasError) return redactInternals(error.message);
  return "internal error while running the job";
}
