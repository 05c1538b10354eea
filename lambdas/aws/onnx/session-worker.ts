/**
 * A worker thread that holds one onnxruntime session and runs it, so that a run never blocks the
 * thread that answers health checks and other models' requests (worker-session.ts starts it).
 *
 * It imports only the tensor conversions of ours (plain TypeScript that Node runs by stripping the
 * types), and bundles into one small file beside a function's handler (lib/maas-function.ts).
 */
import { createRequire } from "node:module";
import { parentPort, workerData } from "node:worker_threads";
import type * as Ort from "onnxruntime-node";
import { runOrtSession } from "#core/tensor/ort-tensors.ts";
import {
  RunChannel,
  type SessionWorkerData,
  type SessionWorkerReply,
  type SessionWorkerRequest,
  SpinWindow,
} from "./session-protocol.ts";

const data = workerData as SessionWorkerData;
const port = parentPort;
if (port === null) throw new Error("session-worker.ts runs as a worker thread");

const ort = createRequire(data.ortEntry)(data.ortEntry) as typeof Ort;
let session: Ort.InferenceSession | undefined;

type RunRequest = Extract<SessionWorkerRequest, { kind: "run" }>;

function reply(message: SessionWorkerReply, transfer: ArrayBuffer[] = []): void {
  port?.postMessage(message, transfer);
}

const runs = new RunChannel(data.runs, data.runCounts, "worker");

function failure(error: unknown): { message: string } {
  return { message: error instanceof Error ? error.message : String(error) };
}

async function open(artifact: string | Uint8Array): Promise<void> {
  try {
    session =
      typeof artifact === "string"
        ? await ort.InferenceSession.create(artifact, data.options)
        : await ort.InferenceSession.create(artifact, data.options);
    reply({
      kind: "opened",
      inputNames: session.inputNames,
      outputNames: session.outputNames,
      inputMetadata: session.inputMetadata,
      outputMetadata: session.outputMetadata,
    });
  } catch (error) {
    reply({ kind: "failed", id: 0, error: failure(error) });
  }
}

async function run(request: RunRequest): Promise<void> {
  if (session === undefined) {
    runs.post({ kind: "failed", id: request.id, error: { message: "no session is open in this worker" } });
    return;
  }
  const started = performance.now();
  try {
    const outputs = await runOrtSession(ort, session, request.inputs, request.outputs);
    // Numeric outputs own their buffers: moved to the caller, not copied.
    const transfer = outputs.flatMap(({ data }) =>
      ArrayBuffer.isView(data) ? [data.buffer as ArrayBuffer] : [],
    );
    const runUs = (performance.now() - started) * 1000;
    runs.post({ kind: "ran", id: request.id, outputs, runUs }, transfer);
  } catch (error) {
    runs.post({ kind: "failed", id: request.id, error: failure(error) });
  }
}

/** How long the next request has taken to come after a reply: back-to-back callers get it polled for. */
const nextRequest = new SpinWindow();
let repliedAt: number | undefined;

/** Runs `first`, then each request that comes while this thread polls after a reply (see SpinWindow). */
async function serve(first: RunRequest): Promise<void> {
  let request: RunRequest | undefined = first;
  while (request !== undefined) {
    if (repliedAt !== undefined) nextRequest.observe((performance.now() - repliedAt) * 1000);
    await run(request);
    repliedAt = performance.now();
    request = runs.poll(nextRequest.us) as RunRequest | undefined;
  }
}

runs.port.on("message", (request: RunRequest) => void serve(request));

port.on("message", (request: SessionWorkerRequest) => {
  if (request.kind === "open") void open(request.artifact);
  else if (request.kind === "close") {
    // The session first, then both ports: with nothing left to wait for, the thread ends by itself.
    const closing = session;
    session = undefined;
    void Promise.resolve(closing?.release()).finally(() => {
      runs.port.close();
      port.close();
    });
  }
});
reply({ kind: "started" });
