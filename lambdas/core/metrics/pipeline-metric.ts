import type { Job, JobStatus, JobStore, JobUpdate } from "#core/jobs/jobs.ts";
import { ORIGINAL_VARIANT } from "#core/model.ts";
import type { OptimizationOutcome } from "#core/optimize/optimization.ts";
import { RegistrationInProgressError } from "#core/registry/registration.ts";
import type {
  JobMetricOutcome,
  OptimizationMetricOutcome,
  RegistrationMetricOutcome,
} from "./pipeline-names.ts";

/**
 * What one step of the publishing and asynchronous pipelines ended in, as every metric writer sees it
 * (CloudWatch EMF in AWS, Prometheus text locally): one per upload registered, optimize message and
 * job message, recorded once the step's work is done. Durations in µs.
 */
interface PipelineStep {
  /** Undefined where the message named no valid model (a bad key, a malformed message, an expired job). */
  readonly model: string | undefined;
  readonly version: number | undefined;
  /** From the step's start to its outcome. */
  readonly durationUs: number;
}

export interface RegistrationMetric extends PipelineStep {
  readonly kind: "registration";
  readonly outcome: RegistrationMetricOutcome;
}

export interface OptimizationMetric extends PipelineStep {
  readonly kind: "optimization";
  readonly outcome: OptimizationMetricOutcome;
}

export interface JobMetric extends PipelineStep {
  readonly kind: "job";
  readonly outcome: JobMetricOutcome;
  /** Waiting on the queue before this run started (undefined when nothing ran). */
  readonly queueUs: number | undefined;
}

export type PipelineMetric = RegistrationMetric | OptimizationMetric | JobMetric;

/** Receives each step's metric after its work: it must not throw, and should not block. */
export interface PipelineMetricsSink {
  record(metric: Readonly<PipelineMetric>): void;
}

/** A sink that keeps nothing: the handlers' default where no sink is wired. */
export const DISCARD_PIPELINE_METRICS: PipelineMetricsSink = { record: () => undefined };

/** Records `metric`; a sink that throws is reported to `onError`, never to the step it measured. */
export function recordPipelineMetric(
  sink: PipelineMetricsSink,
  metric: PipelineMetric,
  onError: (error: unknown) => void,
): void {
  try {
    sink.record(metric);
  } catch (error) {
    onError(error);
  }
}

/** µs since `started`, a performance.now() time. */
export function elapsedUs(started: number): number {
  return Math.round((performance.now() - started) * 1000);
}

/** What a registration that threw counts as: an expected retry, or an error. */
export function registrationErrorOutcome(error: unknown): RegistrationMetricOutcome {
  return error instanceof RegistrationInProgressError ? "in-progress" : "error";
}

/** The outcome an optimization counts as: `optimized` split by whether a variant or the original serves. */
export function optimizationMetricOutcome(result: OptimizationOutcome): OptimizationMetricOutcome {
  switch (result.outcome) {
    case "optimized":
      return result.selected === ORIGINAL_VARIANT ? "kept-original" : "selected-variant";
    case "failed":
      return result.unfinished ? "unfinished" : "failed";
    default:
      return result.outcome;
  }
}

/** Jobs read by the worker's runner, remembered for the metric of each one's run. */
export interface JobReads {
  /** The record the run read of the job, forgotten once taken. */
  take(id: string): Job | undefined;
  /** Reads the job (a dead letter's: its run read nothing). */
  get(id: string): Promise<Job | undefined>;
}

/** At most this many jobs are remembered: a run whose metric is never taken must not leak. */
const REMEMBERED_JOBS = 64;

/**
 * A JobStore that remembers the record it last read of each job, so that a run's metric has its model,
 * version and queueing time without a second read of the table.
 */
export class ObservedJobStore implements JobStore, JobReads {
  readonly #store: JobStore;
  readonly #read = new Map<string, Job>();

  constructor(store: JobStore) {
    this.#store = store;
  }

  create(job: Job): Promise<void> {
    return this.#store.create(job);
  }

  async get(id: string): Promise<Job | undefined> {
    const job = await this.#store.get(id);
    this.#read.delete(id);
    if (job !== undefined) {
      this.#read.set(id, job);
      if (this.#read.size > REMEMBERED_JOBS) this.#read.delete(this.#read.keys().next().value as string);
    }
    return job;
  }

  update(id: string, from: readonly JobStatus[], update: JobUpdate): Promise<boolean> {
    return this.#store.update(id, from, update);
  }

  take(id: string): Job | undefined {
    const job = this.#read.get(id);
    this.#read.delete(id);
    return job;
  }
}

/**
 * How long a run's job waited on the queue: from its submission, or from when its last run put it back
 * (its record's `updated_at`, which the runner sets on each change), to `runStarted` (a Date.now() time).
 */
export function jobQueueUs(job: Job, runStarted: number): number {
  return Math.max(0, runStarted - job.updated_at) * 1000;
}
