/**
 * Entry point of the GPU container: `node server.mjs` (SageMaker appends `serve`, which is ignored).
 * Settings come from the environment; see config.ts.
 */
import { exitProcess } from "#aws/onnx/worker-session.ts";
import { loadGpuServerConfig } from "./config.ts";
import { startGpuServer } from "./server.ts";

const server = await startGpuServer({ config: loadGpuServerConfig(process.env) });

// SageMaker stops containers with SIGTERM: finish what is in flight, then exit.
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.once(signal, () => {
    void server.close().finally(() => exitProcess(0));
  });
}
