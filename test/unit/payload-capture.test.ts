import { describe, expect, it } from "vitest";
import {
  type CapturedExchange,
  type CaptureStore,
  captureHourPrefix,
  PayloadCapture,
} from "#core/capture/payload-capture.ts";

const SETTINGS = { samplePercent: 100, requests: true, responses: true };

function exchange(time: number, body = '{"inputs":[]}'): CapturedExchange {
  return {
    model: "iris",
    version: 3,
    backend: "lambda",
    variant: "original",
    settings: SETTINGS,
    request: { body, base64: false, headerLength: undefined },
    response: { body: '{"outputs":[]}', base64: false, headerLength: undefined },
    time,
  };
}

/** A store whose writes wait until released, and can be told to fail. */
class GatedStore implements CaptureStore {
  readonly writes: { key: string; body: string }[] = [];
  failing = false;
  #release: (() => void)[] = [];

  async put(key: string, body: string): Promise<void> {
    await new Promise<void>((resolve) => this.#release.push(resolve));
    if (this.failing) throw new Error("SlowDown");
    this.writes.push({ key, body });
  }

  release(): void {
    for (const resolve of this.#release.splice(0)) resolve();
  }

  async releaseUntilIdle(capture: PayloadCapture): Promise<void> {
    const drained = capture.drain();
    let done = false;
    void drained.then(() => {
      done = true;
    });
    while (!done) {
      this.release();
      await new Promise((wake) => setImmediate(wake));
    }
  }
}

describe("payload capture", () => {
  it("draws each request against its version's sample rate", () => {
    let draw = 0;
    const draws = [0.05, 0.1, 0.5, 0.99];
    const capture = new PayloadCapture({
      store: new GatedStore(),
      maxBufferBytes: 1 << 20,
      random: () => draws[draw++ % draws.length] as number,
    });
    const settings = { samplePercent: 10, requests: true, responses: false };
    expect([0, 1, 2, 3].map(() => capture.sampled(settings))).toEqual([true, false, false, false]);
    expect(capture.sampled(undefined)).toBe(false);
    expect(capture.sampled({ samplePercent: 100, requests: false, responses: false })).toBe(false);
  });

  it("keys objects by model, version and UTC hour", () => {
    expect(captureHourPrefix("iris", 3, Date.UTC(2026, 11, 7, 5, 59, 59))).toBe(
      "capture/iris/3/2026/12/07/05/",
    );
  });

  it("drops exchanges past its byte bound while a write is in flight, and counts them", async () => {
    const store = new GatedStore();
    const line = JSON.stringify(exchange(0)).length;
    const capture = new PayloadCapture({ store, maxBufferBytes: line * 10 });
    const time = Date.UTC(2026, 11, 7, 5);
    const offered = Array.from({ length: 40 }, (_, i) => capture.offer(exchange(time + i)));
    expect(offered.filter(Boolean).length).toBeGreaterThan(3);
    expect(offered.filter(Boolean).length).toBeLessThan(10);
    expect(capture.counters.dropped).toBe(offered.filter((kept) => !kept).length);

    await store.releaseUntilIdle(capture);
    const lines = store.writes.flatMap((write) => write.body.trimEnd().split("\n"));
    expect(lines).toHaveLength(capture.counters.captured);
    expect(capture.counters.written).toBe(capture.counters.captured);
    // Room again once written.
    expect(capture.offer(exchange(time))).toBe(true);
    await store.releaseUntilIdle(capture);
  });

  it("writes one object per hour prefix, and retries a failed write once before dropping", async () => {
    const store = new GatedStore();
    const errors: unknown[] = [];
    const capture = new PayloadCapture({
      store,
      maxBufferBytes: 1 << 20,
      onError: (error) => errors.push(error),
    });
    const hour = Date.UTC(2026, 11, 7, 5);
    capture.offer(exchange(hour + 1));
    store.release();
    await new Promise((wake) => setImmediate(wake));
    store.failing = true;
    capture.offer(exchange(hour + 3_600_000));
    capture.offer(exchange(hour + 2, '{"secret":"payload"}'));
    await store.releaseUntilIdle(capture);
    // The first write (hour 05) succeeded; both of the next batch's writes failed, were retried once, then dropped.
    expect(store.writes.map((write) => write.key.split("/").slice(0, 7).join("/"))).toEqual([
      "capture/iris/3/2026/12/07/05",
    ]);
    expect(capture.counters).toEqual({ captured: 3, dropped: 2, written: 1 });
    expect(errors).toHaveLength(4);
    expect(errors.map(String).join(" ")).not.toContain("payload");
  });
});
