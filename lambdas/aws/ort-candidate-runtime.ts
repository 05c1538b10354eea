import type * as Ort from "onnxruntime-node";
import type { CandidateRuntime, CandidateSession, GraphOptimizationLevel } from "#core/optimization.ts";
import type { NamedTensor, OrtElementType, TensorData } from "#core/tensor-codec.ts";
import { loadOrt, sessionOptions } from "./onnx-runner.ts";

/** onnxruntime for the optimizer: sessions opened exactly as the inference function opens them. */
export class OrtCandidateRuntime implements CandidateRuntime {
  readonly #intraOpThreads: number | undefined;

  /** `intraOpThreads`: as the serving function has them (its vCPUs); default: this machine's. */
  constructor(intraOpThreads?: number) {
    this.#intraOpThreads = intraOpThreads;
  }

  async open(path: string): Promise<CandidateSession> {
    const ort = await loadOrt();
    const session = await ort.InferenceSession.create(path, sessionOptions(this.#intraOpThreads));
    return {
      run: async (inputs, outputs) => {
        const feeds: Record<string, Ort.Tensor> = {};
        for (const input of inputs) {
          feeds[input.name] = new ort.Tensor(
            input.type,
            input.data as Ort.Tensor.DataType,
            input.dims as number[],
          );
        }
        const results = await session.run(feeds, outputs as string[]);
        return outputs.map((name): NamedTensor => {
          const tensor = results[name] as Ort.Tensor;
          return {
            name,
            type: tensor.type as OrtElementType,
            dims: tensor.dims,
            data: tensor.data as TensorData,
          };
        });
      },
      release: () => session.release(),
    };
  }

  async optimizeGraph(source: string, target: string, level: GraphOptimizationLevel): Promise<void> {
    const ort = await loadOrt();
    const session = await ort.InferenceSession.create(source, {
      ...sessionOptions(this.#intraOpThreads),
      graphOptimizationLevel: level,
      optimizedModelFilePath: target,
    });
    await session.release();
  }
}
