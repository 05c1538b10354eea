/** Asynchronous inference jobs: the record, and the storage, objects and queue they live in. */

export type JobStatus = "queued" | "running" | "succeeded" | "failed";

/** Where a job's objects live in the model bucket; a lifecycle rule expires both prefixes. */
export const JOB_KEYS = {
  /** Uploaded and inline request bodies. */
  inputPrefix: "async/inputs/",
  /** V2 responses, one per job, under the job's id. */
  resultPrefix: "async/results/",
  /** Both, for the lifecycle rule. */
  prefix: "async/",
} as const;

export interface Job {
  /** 128 random bits, base64url: the only way to read the job besides its owner's key. */
  readonly id: string;
  readonly model_name: string;
  /** Resolved at submission: the job runs this version whatever aliases do meanwhile. */
  readonly model_version: number;
  readonly status: JobStatus;
  /** The API key id that submitted it (API Gateway's `identity.apiKeyId`); only it may read the job. */
  readonly owner?: string;
  /** The request body's key; `headerLength` when it is a JSON header and binary tensor data. */
  readonly input: { readonly key: string; readonly headerLength?: number };
  readonly output?: { readonly key: string; readonly contentType: string; readonly headerLength?: number };
  readonly error?: string;
  /** Runs started, retries included. */
  readonly attempts: number;
  /** Epoch milliseconds. */
  readonly created_at: number;
  readonly updated_at: number;
  /** Epoch seconds: the table's time to live. */
  readonly expires_at: number;
}

export type JobUpdate = Partial<Pick<Job, "status" | "output" | "error" | "attempts" | "updated_at">>;

export interface JobStore {
  /** Writes a new job; its id must be new. */
  create(job: Job): Promise<void>;
  /** The job, read consistently, or undefined. */
  get(id: string): Promise<Job | undefined>;
  /** Applies `update` if the job's status is one of `from`; false when it is not (another run got there). */
  update(id: string, from: readonly JobStatus[], update: JobUpdate): Promise<boolean>;
}

export interface JobObjects {
  presignPut(key: string, expiresSeconds: number): Promise<string>;
  /** Starts a multipart upload and presigns its parts and its completion. */
  presignMultipart(
    key: string,
    parts: number,
    expiresSeconds: number,
  ): Promise<{ uploadId: string; partUrls: string[]; completeUrl: string }>;
  presignGet(key: string, expiresSeconds: number): Promise<string>;
  /** The object's size, or undefined when there is none. */
  size(key: string): Promise<number | undefined>;
  get(key: string): Promise<Buffer>;
  put(
    key: string,
    body: string | Uint8Array,
    contentType: string,
    metadata?: Record<string, string>,
  ): Promise<void>;
}

export interface JobQueue {
  send(id: string): Promise<void>;
}
