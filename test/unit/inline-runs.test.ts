import { afterEach, describe, expect, it } from "vitest";
import { INLINE_LIMIT_US, INLINE_MAX_MODEL_BYTES, InlineRuns, InlineShapes } from "#aws/onnx/inline-runs.ts";
import { sessionOptions } from "#aws/onnx/runner.ts";
import { type OpenOptions, WorkerSession } from "#aws/onnx/worker-session.ts";
import { DeadlineExceededError, type MaasError } from "#core/errors.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import { buildIrisModel } from "../../models/iris.ts";
import { callerLoopModel, callerReshapeModel } from "../support/runaway-models.ts";

const KEY = "probabilities;features:1x4";

describe("InlineShapes", () => {
  it("runs a shape inline after three worker runs within the limit", () => {
    const shapes = new InlineShapes();
    shapes.observeWorker(KEY, INLINE_LIMIT_US);
    shapes.observeWorker(KEY, 10);
    expect(shapes.allows(KEY)).toBe(false);

    shapes.observeWorker(KEY, 10);

    expect(shapes.allows(KEY)).toBe(true);
  });

  it("counts again from a worker run over the limit", () => {
    const shapes = new InlineShapes();
    shapes.observeWorker(KEY, 10);
    shapes.observeWorker(KEY, 10);
    shapes.observeWorker(KEY, INLINE_LIMIT_US + 1);
    shapes.observeWorker(KEY, 10);
    shapes.observeWorker(KEY, 10);

    expect(shapes.allows(KEY)).toBe(false);
  });

  it("sends a shape back to the worker for good after two slow inline runs in a row", () => {
    const shapes = new InlineShapes();
    for (let i = 0; i < 3; i++) shapes.observeWorker(KEY, 10);
    shapes.observeInline(KEY, 5 * INLINE_LIMIT_US);
    shapes.observeInline(KEY, 10);
    shapes.observeInline(KEY, 5 * INLINE_LIMIT_US);
    expect(shapes.allows(KEY)).toBe(true);

    shapes.observeInline(KEY, 5 * INLINE_LIMIT_US);
    for (let i = 0; i < 10; i++) shapes.observeWorker(KEY, 10);

    expect(shapes.allows(KEY)).toBe(false);
  });

  it("keys runs by their inputs' names and shapes and the outputs asked for", () => {
    const input = (dims: number[]): NamedTensor => ({
      name: "features",
      type: "float32",
      dims,
      data: new Float32Array(dims[0]! * dims[1]!),
    });

    expect(InlineShapes.key([input([1, 4])], ["probabilities"])).toBe(KEY);
    expect(InlineShapes.key([input([2, 4])], ["probabilities"])).not.toBe(KEY);
    expect(InlineShapes.key([input([1, 4])], ["probabilities", "label"])).not.toBe(KEY);
  });

  it("tracks at most 64 shapes: runs of others stay on the worker", () => {
    const shapes = new InlineShapes();
    for (let shape = 0; shape <= 64; shape++)
      for (let i = 0; i < 3; i++) shapes.observeWorker(`shape ${shape}`, 10);

    expect(shapes.allows("shape 63")).toBe(true);
    expect(shapes.allows("shape 64")).toBe(false);
  });
});

describe("InlineRuns", () => {
  it("keeps no second session of a model over the size limit", async () => {
    const large = new Uint8Array(INLINE_MAX_MODEL_BYTES + 1);

    expect(await InlineRuns.of(large, sessionOptions(1))).toBeUndefined();
  });
});

describe("WorkerSession with inline runs", () => {
  const open: WorkerSession[] = [];
  // A limit no run here reaches, however loaded the machine: these tests are about what happens once a
  // shape qualifies, and the one about the limit passes its own.
  const session = async (bytes: Uint8Array, options: OpenOptions = { inline: true, inlineLimitUs: 1e6 }) => {
    const opened = await WorkerSession.open(bytes, sessionOptions(1), options);
    open.push(opened);
    return opened;
  };
  afterEach(async () => {
    await Promise.all(open.splice(0).map((opened) => opened.release()));
  });

  const irisRows = (rows: number): NamedTensor[] => [
    {
      name: "features",
      type: "float32",
      dims: [rows, 4],
      data: Float32Array.from({ length: rows * 4 }, (_, i) => [5.1, 3.5, 1.4, 0.2][i % 4]!),
    },
  ];
  const deadline = () => Date.now() + 10_000;

  /**
   * Runs `inputs` up to `times` times, until one runs inline or `done()`; the outputs of each run. The
   * session on this thread is made (or refused) off the request that qualified the shape, in the
   * background: later runs go to the worker meanwhile.
   */
  async function runUntilInline(
    opened: WorkerSession,
    inputs: NamedTensor[],
    times = 200,
    done = () => (opened.inline?.runs ?? 0) > 0,
  ) {
    const outputs: NamedTensor[][] = [];
    for (let i = 0; i < times && !done(); i++) {
      outputs.push(await opened.run(inputs, opened.outputNames, deadline()));
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    return outputs;
  }

  it("runs iris on this thread once its shape qualified, with the worker's results", async () => {
    const iris = await session(buildIrisModel());

    const outputs = await runUntilInline(iris, irisRows(1));

    expect(iris.inline?.runs).toBe(1);
    expect(iris.inline?.refusal).toBeUndefined();
    expect(outputs.at(-1)).toEqual(outputs[0]);
  });

  it("keeps a shape whose worker runs pass the limit on the worker", async () => {
    // 20 000 rows take milliseconds, one row tens of µs.
    const iris = await session(buildIrisModel(), { inline: true });

    await runUntilInline(iris, irisRows(20_000), 8);

    expect(iris.inline?.runs).toBe(0);
  });

  it("runs nothing inline when not asked to", async () => {
    const iris = await session(buildIrisModel(), {});

    await runUntilInline(iris, irisRows(1), 8);

    expect(iris.inline).toBeUndefined();
  });

  it("never runs a Loop inline, and a runaway trip count still ends at its deadline", async () => {
    const loop = await session(callerLoopModel());
    const trips = (count: bigint): NamedTensor[] => [
      { name: "M", type: "int64", dims: [], data: BigInt64Array.from([count]) },
      { name: "x", type: "float32", dims: [1], data: Float32Array.from([3]) },
    ];

    await runUntilInline(loop, trips(1n), 200, () => loop.inline?.refusal !== undefined);
    const runaway = loop.run(trips(3_000_000n), loop.outputNames, Date.now() + 300);

    await expect(runaway).rejects.toBeInstanceOf(DeadlineExceededError);
    expect(loop.inline?.runs).toBe(0);
    expect(loop.inline?.refusal).toBe("it runs Loop, whose work an input's values can set");
  });

  it("answers a caller's bad shape inline with the worker's error", async () => {
    const reshape = (shape: bigint[]): NamedTensor[] => [
      { name: "x", type: "float32", dims: [2, 3], data: new Float32Array(6) },
      { name: "shape", type: "int64", dims: [2], data: BigInt64Array.from(shape) },
    ];
    const onWorker = await session(callerReshapeModel(), {});
    const workerError = await onWorker.run(reshape([-1n, 5n]), ["y"], deadline()).catch((e: MaasError) => e);
    const inline = await session(callerReshapeModel());
    await runUntilInline(inline, reshape([3n, 2n]));

    const inlineError = await inline.run(reshape([-1n, 5n]), ["y"], deadline()).catch((e: MaasError) => e);

    expect(inline.inline?.runs).toBe(2);
    expect(inlineError).toMatchObject({ status: 400, message: (workerError as MaasError).message });
    expect((workerError as MaasError).status).toBe(400);
  });

  it("answers an inline run asked for after its deadline with a 504", async () => {
    const iris = await session(buildIrisModel());
    await runUntilInline(iris, irisRows(1));

    const late = iris.run(irisRows(1), iris.outputNames, Date.now() - 1);

    await expect(late).rejects.toThrow("the request's deadline passed before the model ran");
  });
});
