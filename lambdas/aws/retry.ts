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
