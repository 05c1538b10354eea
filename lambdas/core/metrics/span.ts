/**
 * A timed step of one traced request, in performance.now() milliseconds: its phases (registry, artifact
 * fetch, session create, queue, run...) and the AWS calls made for it. X-Ray draws them as subsegments.
 */
export interface Span {
  readonly name: string;
  readonly start: number;
  readonly end: number;
  /** Set on a call to an AWS service, which X-Ray draws as a downstream node of its own. */
  readonly aws?: AwsCallSpan;
}

export interface AwsCallSpan {
  /** X-Ray's names for them: `S3`, `DynamoDB`. */
  readonly service: string;
  readonly operation: string;
  readonly region: string;
  /** The last attempt's HTTP status; undefined when no answer came (network failure, timeout). */
  readonly status: number | undefined;
  /** Attempts beyond the first. */
  readonly retries: number;
  /** The service's error code (`NoSuchKey`, `ThrottlingException`), or a network one. */
  readonly errorCode?: string;
}

/**
 * Traces requests, where a tracer is configured: each request asks whether it is traced, and the
 * clients it calls report their AWS calls to whichever request is being traced.
 */
export interface RequestTracing {
  /** A request starts: the trace to fill when this one is traced (sampled), else undefined. */
  begin(): RequestTrace | undefined;
  /** Its response is ready: calls after this are not the request's. */
  end(trace: RequestTrace): void;
  /**
   * After the response: sends the trace, its root the whole request from `start` to `end`, with
   * `annotations` (model, version...) to search traces by.
   */
  send(
    trace: RequestTrace,
    root: Omit<Span, "aws">,
    annotations?: Readonly<Record<string, string | number>>,
  ): void;
  /** An AWS call just ended: it belongs to the request being traced, if any. */
  recordCall(span: Span): void;
}

export interface RequestTrace {
  /** Filled as the request goes, in any order. */
  readonly spans: Span[];
}
