/** Backoff shared by the AWS clients' retry loops; each loop keeps its own attempts, deadline and codes. */

/** The wait before retry n is uniform in [0, min(cap, base * 2^(n-1))] ("full jitter"). */
export interface Backoff {
  readonly baseMs: number;
  readonly capMs: number;
}

/** The full-jitter wait after failed attempt `attempt` (from 1), before the next one. */
export function fullJitterMs(attempt: number, backoff: Backoff, random: () => number): number {
  return random() * Math.min(backoff.capMs, backoff.baseMs * 2 ** (attempt - 1));
}

export const defaultSleep = (ms: number) => new Promise<void>((wake) => setTimeout(wake, ms));

/** How a client retries: its options, each with the same default except the backoff's. */
export interface RetryOptions {
  /** @default 3 */
  readonly maxAttempts?: number;
  /** The wait before retry n is uniform in [0, min(cap, base * 2^(n-1))] ("full jitter"). */
  readonly backoff?: Backoff;
  readonly sleep?: (ms: number) => Promise<void>;
  readonly random?: () => number;
}

export interface RetryPolicy {
  readonly maxAttempts: number;
  readonly sleep: (ms: number) => Promise<void>;
  /** The wait after failed attempt `attempt` (from 1), before the next one. */
  delayMs(attempt: number): number;
}

export function retryPolicy(options: RetryOptions, defaultBackoff: Backoff): RetryPolicy {
  const backoff = options.backoff ?? defaultBackoff;
  const random = options.random ?? Math.random;
  return {
    maxAttempts: Math.max(1, options.maxAttempts ?? 3),
    sleep: options.sleep ?? defaultSleep,
    delayMs: (attempt) => fullJitterMs(attempt, backoff, random),
  };
}
