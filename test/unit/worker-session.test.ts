import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MessageChannel } from "node:worker_threads";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sessionOptions } from "#aws/onnx/runner.ts";
import { RunChannel, SpinWindow } from "#aws/onnx/session-protocol.ts";
import { stuckRuns, WorkerSession } from "#aws/onnx/worker-session.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import { buildIrisModel } from "../../models/iris.ts";
import { callerLoopModel } from "../support/runaway-models.ts";

describe("SpinWindow", () => {
  it("polls for nothing before it has seen a wait", () => {
    expect(new SpinWindow().us).toBe(0);
  });

  it("polls for twice the typical wait and 50 µs more", () => {
    const window = new SpinWindow();
    window.observe(100);

    expect(window.us).toBe(250);
  });

  it("moves an eighth of the way to each new wait", () => {
    const window = new SpinWindow();
    window.observe(100);
    window.observe(900);

    // typical 100 + (900 - 100) / 8 = 200
    expect(window.us).toBe(450);
  });

  it("caps the window at its limit", () => {
    const window = new SpinWindow();
    window.observe(SpinWindow.LIMIT_US * 0.9);

    expect(window.us).toBe(SpinWindow.LIMIT_US);
  });

  it("stops polling once waits are typically longer than the limit", () => {
    const window = new SpinWindow();
    window.observe(50);
    for (let i = 0; i < 40; i++) window.observe(20_000);

    expect(window.us).toBe(0);
  });
});

describe("RunChannel", () => {
  function channel() {
    const { port1, port2 } = new MessageChannel();
    const counts = RunChannel.counts();
    return {
      session: new RunChannel(port1, counts, "session"),
      worker: new RunChannel(port2, counts, "worker"),
    };
  }
  const request = { kind: "run", id: 7, inputs: [], outputs: [] } as const;
  const reply = { kind: "failed", id: 7, error: { message: "m" } } as const;

  it("takes the other end's answer once its count moves past where it stood at this end's post", () => {
    const { session, worker } = channel();
    session.post(request);
    worker.post(reply);

    expect(session.poll(1_000)).toEqual(reply);
    session.port.close();
  });

  it("gives up after its window when the other end posts nothing", () => {
    const { session } = channel();
    session.post(request);
    const start = performance.now();

    expect(session.poll(2_000)).toBeUndefined();
    expect(performance.now() - start).toBeGreaterThanOrEqual(2);
    session.port.close();
  });

  it("does not count its own messages as the other end's", () => {
    const { session } = channel();
    session.post({ kind: "close" });

    expect(session.poll(1_000)).toBeUndefined();
    session.port.close();
  });

  it("does not look for a window of 0", () => {
    const { session, worker } = channel();
    session.post(request);
    worker.post(reply);

    expect(session.poll(0)).toBeUndefined();
    expect(session.poll(1_000)).toEqual(reply);
    session.port.close();
  });
});

describe("WorkerSession", () => {
  let dir: string;
  let iris: WorkerSession;
  let loop: WorkerSession;
  const irisInputs: NamedTensor[] = [
    { name: "features", type: "float32", dims: [1, 4], data: Float32Array.from([5.1, 3.5, 1.4, 0.2]) },
  ];
  const loopInputs = (trips: bigint): NamedTensor[] => [
    { name: "M", type: "int64", dims: [], data: BigInt64Array.from([trips]) },
    { name: "x", type: "float32", dims: [1], data: Float32Array.from([3]) },
  ];

  /** Whether `promise` has settled by the time this is called (a settled one wins the race). */
  async function settledAlready(promise: Promise<unknown>): Promise<boolean> {
    const pending = Symbol("pending");
    return (await Promise.race([promise, pending])) !== pending;
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "maas-worker-session-"));
    await writeFile(join(dir, "iris.onnx"), buildIrisModel());
    await writeFile(join(dir, "loop.onnx"), callerLoopModel());
    iris = await WorkerSession.open(join(dir, "iris.onnx"), sessionOptions(1));
    loop = await WorkerSession.open(join(dir, "loop.onnx"), sessionOptions(1));
  });

  afterAll(async () => {
    await iris?.release();
    await loop?.release();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("moves bytes that fill their buffer to the worker, without a copy", async () => {
    // As the artifact cache hands them out: the caller's own memory, all of it.
    const model = buildIrisModel();
    const bytes = Buffer.allocUnsafeSlow(model.byteLength);
    bytes.set(model);

    const session = await WorkerSession.open(bytes, sessionOptions(1));
    try {
      expect(bytes.buffer.byteLength).toBe(0);
      const [label] = await session.run(irisInputs, ["label"], Date.now() + 10_000);
      expect(label?.data).toEqual(["setosa"]);
    } finally {
      await session.release();
    }
  });

  it("copies bytes that are a view into a larger buffer, leaving the buffer whole", async () => {
    const model = buildIrisModel();
    const shared = Buffer.alloc(model.byteLength + 64);
    shared.set(model, 32);
    const bytes = shared.subarray(32, 32 + model.byteLength);
    const before = Buffer.from(shared);

    const session = await WorkerSession.open(bytes, sessionOptions(1));
    try {
      expect(shared.equals(before)).toBe(true);
      const [label] = await session.run(irisInputs, ["label"], Date.now() + 10_000);
      expect(label?.data).toEqual(["setosa"]);
    } finally {
      await session.release();
    }
  });

  it("releases by letting the worker release its session and end by itself, not by terminating it", async () => {
    const session = await WorkerSession.open(join(dir, "iris.onnx"), sessionOptions(1));
    for (let i = 0; i < 20; i++) await session.run(irisInputs, ["label"], Date.now() + 10_000);
    const start = performance.now();

    await session.release();

    // A worker that did not end by itself would be terminated only after the 5 s grace.
    expect(performance.now() - start).toBeLessThan(2_000);
    expect(session.lost).toBe(true);
    await expect(session.run(irisInputs, ["label"], Date.now() + 10_000)).rejects.toMatchObject({
      status: 503,
    });
  });

  it("answers short back-to-back runs before run() returns, by polling for their replies", async () => {
    for (let i = 0; i < 20; i++) await iris.run(irisInputs, ["label"], Date.now() + 10_000);

    // A loaded machine can push any one reply past its window: up to 3 s of runs, until 5 come in place.
    let answeredInPlace = 0;
    const until = performance.now() + 3_000;
    while (answeredInPlace < 5 && performance.now() < until) {
      const run = iris.run(irisInputs, ["label"], Date.now() + 10_000);
      if (await settledAlready(run)) answeredInPlace++;
      const [label] = await run;
      expect(label?.data).toEqual(["setosa"]);
    }

    expect(answeredInPlace).toBe(5);
  });

  it("settles the runs of a queue one message at a time, never by polling reply after reply", async () => {
    for (let i = 0; i < 20; i++) await iris.run(irisInputs, ["label"], Date.now() + 10_000);
    const rows = 5_000;
    const batch: NamedTensor[] = [
      { name: "features", type: "float32", dims: [rows, 4], data: new Float32Array(rows * 4).fill(1) },
    ];

    // A run of a few ms, past the poll window but short enough to leave polling on (see SpinWindow),
    // and 30 short ones queued behind it.
    const long = iris.run(batch, ["label"], Date.now() + 10_000);
    const queued = Array.from({ length: 30 }, () => iris.run(irisInputs, ["label"], Date.now() + 10_000));
    // Microtasks run between two 'message' events: a run settled by its own event finds the next one
    // still pending. Polled for inside the previous one's settling, the next has settled already.
    let settledWithTheOneBefore = 0;
    const checks = queued.slice(0, -1).map((run, i) =>
      run.then(async () => {
        if (await settledAlready(queued[i + 1] as Promise<unknown>)) settledWithTheOneBefore++;
      }),
    );
    await Promise.all([long, ...queued, ...checks]);

    expect(settledWithTheOneBefore).toBe(0);
  });

  it("waits for a run longer than its window without holding the thread, and gets its answer", async () => {
    for (let i = 0; i < 20; i++) await loop.run(loopInputs(10n), ["y"], Date.now() + 10_000);

    let ticks = 0;
    const ticker = setInterval(() => ticks++, 5);
    const [y] = await loop.run(loopInputs(300_000n), ["y"], Date.now() + 30_000);
    clearInterval(ticker);

    expect(Array.from(y?.data as Float32Array)).toEqual([3]);
    // The run takes hundreds of ms; a thread held for it would have let no timer fire.
    expect(ticks).toBeGreaterThan(3);
  });

  it("still ends a runaway run at its deadline after short runs have been polled for", async () => {
    const session = await WorkerSession.open(join(dir, "loop.onnx"), sessionOptions(1));
    try {
      for (let i = 0; i < 20; i++) await session.run(loopInputs(10n), ["y"], Date.now() + 10_000);
      const start = performance.now();

      const runaway = session.run(loopInputs(3_000_000n), ["y"], Date.now() + 300);

      await expect(runaway).rejects.toMatchObject({ status: 504 });
      expect(performance.now() - start).toBeLessThan(1_000);
      expect(session.lost).toBe(true);
    } finally {
      await session.release();
    }
    // The abandoned run's thread ends with its run (seconds): the file waits, so that the process can exit.
    await expect.poll(() => stuckRuns(), { timeout: 60_000, interval: 100 }).toBe(0);
  }, 90_000);
});
