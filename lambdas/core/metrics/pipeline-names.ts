/**
 * What the worker functions' steps (registration, optimization, asynchronous jobs) end in: the
 * `outcome` dimension and label of their figures in names.ts.
 */

/** What registering one upload ended in: registration's own outcomes, or a throw (retried by SQS). */
export const REGISTRATION_OUTCOMES = [
  "registered",
  "failed",
  "rejected",
  "duplicate",
  "superseded",
  "ignored",
  "manifest-updated",
  /** Another worker is still on the version: retried later, not an error. */
  "in-progress",
  /** An infrastructure error, or a message that is not an S3 notification: retried, then dead-lettered. */
  "error",
] as const;
export type RegistrationMetricOutcome = (typeof REGISTRATION_OUTCOMES)[number];

/** What one optimize message ended in. */
export const OPTIMIZATION_OUTCOMES = [
  /** A variant passed the parity gate and the benchmark: it serves now. */
  "selected-variant",
  /** No variant beat the original (or the manifest pins it): the original serves. */
  "kept-original",
  /** The model's doing (no candidate could be built or checked): the original serves. */
  "failed",
  /** Infrastructure failures on every receive, or a dead letter: the original serves. */
  "unfinished",
  "duplicate",
  "in-progress",
  "superseded",
  "ignored",
  /** Thrown: retried by SQS, then dead-lettered. */
  "error",
] as const;
export type OptimizationMetricOutcome = (typeof OPTIMIZATION_OUTCOMES)[number];

/** What one receive of a job's message ended in. */
export const JOB_OUTCOMES = [
  "succeeded",
  /** Ended failed: a caller's mistake at once, anything else on the message's last receive. */
  "failed",
  /** Threw: the message comes back after the backoff. */
  "retried",
  /** Its message reached the dead-letter queue: the job ended failed without an answer. */
  "dead-lettered",
  /** Already ended, expired, or run by another receive: nothing done. */
  "skipped",
] as const;
export type JobMetricOutcome = (typeof JOB_OUTCOMES)[number];
