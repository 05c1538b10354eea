import type { CaptureSettings } from "#core/model.ts";

/**
 * Sampled capture of infer requests and responses to S3, SageMaker Data Capture's equivalent: a
 * version opts in (its manifest's `capture`, or an operator), and each sampled exchange becomes one
 * JSON line in SageMaker's capture format under `capture/<model>/<version>/<yyyy>/<mm>/<dd>/<hh>/`.
 * Written after the response, through a buffer with a byte bound: past it, exchanges are dropped and
 * counted, never queued without end. Payloads never go to logs.
 */

/** One served exchange, as API Gateway saw it: bodies as they came and went (base64 or text). */
export interface CapturedExchange {
  readonly model: string;
  readonly version: number;
  readonly backend: string;
  readonly variant: string;
  readonly settings: CaptureSettings;
  readonly request: CapturedBody;
  readonly response: CapturedBody;
  /** A Date.now() time. */
  readonly time: number;
}

export interface CapturedBody {
  readonly body: string;
  readonly base64: boolean;
  /** The binary tensor extension's JSON header length, for a binary body. */
  readonly headerLength: number | undefined;
}

/** Writes one capture object. */
export interface CaptureStore {
  put(key: string, body: string): Promise<void>;
}

export interface PayloadCaptureOptions {
  readonly store: CaptureStore;
  /** Exchanges waiting for their write, in bytes; more are dropped. */
  readonly maxBufferBytes: number;
  /** Told of a failed write (never with payloads). */
  readonly onError?: (error: unknown) => void;
  /** @default Math.random */
  readonly random?: () => number;
}

/** What capture did since the process started. */
export interface CaptureCounters {
  /** Exchanges sampled and buffered. */
  captured: number;
  /** Exchanges sampled but dropped: the buffer was full, or their write failed twice. */
  dropped: number;
  /** Exchanges written to the store. */
  written: number;
}

interface Pending {
  readonly prefix: string;
  readonly line: string;
  readonly bytes: number;
  /** Writes of it that failed. */
  failures: number;
}

export const CAPTURE_PREFIX = "capture/";

/** The key prefix of a version's captures in the hour of `time` (UTC). */
export function captureHourPrefix(model: string, version: number, time: number): string {
  const iso = new Date(time).toISOString();
  return `${CAPTURE_PREFIX}${model}/${version}/${iso.slice(0, 4)}/${iso.slice(5, 7)}/${iso.slice(8, 10)}/${iso.slice(11, 13)}/`;
}

export class PayloadCapture {
  readonly counters: CaptureCounters = { captured: 0, dropped: 0, written: 0 };
  readonly #store: CaptureStore;
  readonly #maxBufferBytes: number;
  readonly #onError: (error: unknown) => void;
  readonly #random: () => number;
  #pending: Pending[] = [];
  #pendingBytes = 0;
  #flushing: Promise<void> | undefined;

  constructor(options: PayloadCaptureOptions) {
    this.#store = options.store;
    this.#maxBufferBytes = options.maxBufferBytes;
    this.#onError = options.onError ?? (() => undefined);
    this.#random = options.random ?? Math.random;
  }

  /** Whether to capture one request of a version with these settings: its sample rate, drawn. */
  sampled(settings: CaptureSettings | undefined): settings is CaptureSettings {
    return (
      settings !== undefined &&
      (settings.requests || settings.responses) &&
      this.#random() * 100 < settings.samplePercent
    );
  }

  /** Buffers the exchange and starts writing it; false when the buffer is full and it was dropped. */
  offer(exchange: CapturedExchange): boolean {
    const line = captureLine(exchange);
    const bytes = Buffer.byteLength(line);
    if (this.#pendingBytes + bytes > this.#maxBufferBytes) {
      this.counters.dropped++;
      return false;
    }
    this.counters.captured++;
    this.#pending.push({
      prefix: captureHourPrefix(exchange.model, exchange.version, exchange.time),
      line,
      bytes,
      failures: 0,
    });
    this.#pendingBytes += bytes;
    this.#flushing ??= this.#flush();
    return true;
  }

  /** Resolves once everything buffered so far has been written or dropped. */
  async drain(): Promise<void> {
    while (this.#flushing !== undefined) await this.#flushing;
  }

  /** One write in flight at a time; exchanges that arrive meanwhile go in the next. */
  async #flush(): Promise<void> {
    try {
      while (this.#pending.length > 0) {
        const batch = this.#pending;
        this.#pending = [];
        const groups = new Map<string, Pending[]>();
        for (const pending of batch) {
          const group = groups.get(pending.prefix);
          if (group === undefined) groups.set(pending.prefix, [pending]);
          else group.push(pending);
        }
        for (const [prefix, group] of groups) {
          try {
            await this.#store.put(objectKey(prefix), `${group.map((pending) => pending.line).join("\n")}\n`);
            this.counters.written += group.length;
            this.#release(group);
          } catch (error) {
            this.#onError(error);
            this.#retryOrDrop(group);
          }
        }
      }
    } finally {
      this.#flushing = undefined;
    }
  }

  #release(group: readonly Pending[]): void {
    for (const pending of group) this.#pendingBytes -= pending.bytes;
  }

  /** A failed write's exchanges get one more try, in the next write (the store already retried). */
  #retryOrDrop(group: readonly Pending[]): void {
    for (const pending of group) {
      pending.failures++;
      if (pending.failures < 2) {
        this.#pending.push(pending);
      } else {
        this.counters.dropped++;
        this.#pendingBytes -= pending.bytes;
      }
    }
  }
}

/** Unique per write: the time, then random hex, so keys sort by time within an hour. */
function objectKey(prefix: string): string {
  const stamp = new Date().toISOString().replace(/[-:.]/g, "");
  const suffix = process.getBuiltinModule("node:crypto").randomBytes(6).toString("hex");
  return `${prefix}${stamp}-${suffix}.jsonl`;
}

/** A body in SageMaker Data Capture's form: JSON text as is, anything else base64. */
function captureData(body: CapturedBody, mode: "INPUT" | "OUTPUT") {
  if (!body.base64) {
    return { observedContentType: "application/json", mode, data: body.body, encoding: "JSON" };
  }
  // A binary tensor body: the JSON header's length travels in the content type, as SageMaker's Triton takes it.
  const observedContentType =
    body.headerLength === undefined
      ? "application/octet-stream"
      : `application/vnd.sagemaker-triton.binary+json;json-header-size=${body.headerLength}`;
  return { observedContentType, mode, data: body.body, encoding: "BASE64" };
}

/** One line of SageMaker's data capture format, with the model version in its event metadata. */
export function captureLine(exchange: CapturedExchange): string {
  const { settings } = exchange;
  return JSON.stringify({
    captureData: {
      ...(settings.requests ? { endpointInput: captureData(exchange.request, "INPUT") } : {}),
      ...(settings.responses ? { endpointOutput: captureData(exchange.response, "OUTPUT") } : {}),
    },
    eventMetadata: {
      eventId: crypto.randomUUID(),
      inferenceTime: new Date(exchange.time).toISOString(),
      model: exchange.model,
      version: exchange.version,
      backend: exchange.backend,
      variant: exchange.variant,
    },
    eventVersion: "0",
  });
}
