import type {
  CandidateRuntime,
  CandidateSession,
  GraphOptimizationLevel,
} from "#core/optimize/optimization.ts";
import { runOrtSession } from "#core/tensor/ort-tensors.ts";
import { loadOrt } from "./ort.ts";
import { createOrtSession, sessionOptions } from "./runner.ts";

/** onnxruntime for the optimizer: sessions opened exactly as the inference function opens them. */
export class OrtCandidateRuntime implements CandidateRuntime {
  readonly #intraOpThreads: number | undefined;

  /** `intraOpThreads`: as the serving function has them (its vCPUs); default: this machine's. */
  constructor(intraOpThreads?: number) {
    this.#intraOpThreads = intraOpThreads;
  }

  async open(path: string): Promise<CandidateSession> {
    const session = await createOrtSession(path, this.#intraOpThreads);
    const ort = loadOrt(); // for its tensor types; createOrtSession has loaded it already
    return {
      run: (inputs, outputs) => runOrtSession(ort, session, inputs, outputs),
      release: () => session.release(),
    };
  }

  async optimizeGraph(source: string, target: string, level: GraphOptimizationLevel): Promise<void> {
    const ort = loadOrt();
    const session = await ort.InferenceSession.create(source, {
      ...sessionOptions(this.#intraOpThreads),
      graphOptimizationLevel: level,
      optimizedModelFilePath: target,
    });
    await session.release();
  }
}
