/**
 * Static checks of the GPU container image (no Docker engine here), and a run of the compiled server
 * bundle the image ships, on CPU.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { join, relative, resolve } from "node:path";
import { createInterface } from "node:readline";
import type { Metafile } from "esbuild";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bundleGpuServer } from "../../containers/gpu/build.ts";
import { gpuServerConfigSchema } from "../../containers/gpu/config.ts";

const REPO = resolve(import.meta.dirname, "../..");
const DOCKERFILE = join(REPO, "containers/gpu/Dockerfile");

interface Instruction {
  readonly keyword: string;
  readonly args: string;
}

interface Stage {
  readonly from: string;
  readonly name: string | undefined;
  readonly instructions: Instruction[];
}

/** Instructions in order: continuation lines joined, comments dropped. */
function parseDockerfile(text: string): Instruction[] {
  const instructions: Instruction[] = [];
  let pending = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (pending === "" && (line === "" || line.startsWith("#"))) continue;
    if (line.startsWith("#")) continue; // a comment inside a continued instruction
    if (line.endsWith("\\")) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    const full = `${pending}${line}`.trim();
    pending = "";
    if (full === "") continue;
    const space = full.search(/\s/);
    instructions.push({ keyword: full.slice(0, space).toUpperCase(), args: full.slice(space + 1).trim() });
  }
  return instructions;
}

/** Splits into stages; `${ARG}` in FROM is replaced by the global ARG defaults. */
function stagesOf(instructions: Instruction[]): Stage[] {
  const globals: Record<string, string> = {};
  const stages: Stage[] = [];
  for (const instruction of instructions) {
    if (instruction.keyword === "ARG" && stages.length === 0) {
      const [name, value = ""] = instruction.args.split("=", 2);
      globals[name!] = value;
    } else if (instruction.keyword === "FROM") {
      const words = instruction.args.split(/\s+/).filter((word) => !word.startsWith("--"));
      const image = words[0]!.replace(/\$\{(\w+)\}/g, (_, name: string) => globals[name] ?? "");
      const as = words.findIndex((word) => word.toUpperCase() === "AS");
      stages.push({ from: image, name: as === -1 ? undefined : words[as + 1], instructions: [] });
    } else {
      stages.at(-1)?.instructions.push(instruction);
    }
  }
  return stages;
}

const args = (stage: Stage, keyword: string) =>
  stage.instructions
    .filter((instruction) => instruction.keyword === keyword)
    .map((instruction) => instruction.args);

/** COPY sources taken from the build context (not --from another stage). */
function contextSources(stage: Stage): string[] {
  return args(stage, "COPY")
    .filter((copy) => !copy.startsWith("--from"))
    .flatMap((copy) => {
      const words = copy.split(/\s+/).filter((word) => !word.startsWith("--"));
      return words.slice(0, -1);
    });
}

let text: string;
let stages: Stage[];
let build: Stage;
let runtime: Stage;

beforeAll(async () => {
  text = await readFile(DOCKERFILE, "utf8");
  stages = stagesOf(parseDockerfile(text));
  build = stages.find((stage) => stage.name === "build")!;
  runtime = stages.at(-1)!;
});

describe("containers/gpu/Dockerfile", () => {
  it("builds and runs on a Node 22 base image", () => {
    expect(build.from).toMatch(/^node:22(-|$)/);
    expect(runtime.from).toMatch(/^node:22(-|$)/);
  });

  it("runs onnxruntime-node's install script for CUDA 12 and never skips it", () => {
    expect(text).not.toMatch(/onnxruntime-node-install\s*=\s*skip/i);
    expect(text).not.toMatch(/ONNXRUNTIME_NODE_INSTALL\s*=\s*skip/i);
    const runs = args(build, "RUN").join("\n");
    expect(runs).toContain(
      "ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js",
    );
    expect(runs).toContain("libonnxruntime_providers_cuda.so");
    // The repository's .npmrc skips the download: it must not reach the image build.
    expect(contextSources(build)).not.toContain(".npmrc");
  });

  it("ships the CUDA and cuDNN libraries the provider links, and checks them at build time", () => {
    const cuda = stages.find((stage) => stage.name === "cuda")!;
    expect(cuda.from).toMatch(/^nvidia\/cuda:12\.[\d.]+-cudnn-runtime-/);
    expect(args(runtime, "COPY").some((copy) => copy.startsWith("--from=cuda"))).toBe(true);
    expect(args(runtime, "RUN").join("\n")).toMatch(/ldd .*libonnxruntime_providers_cuda\.so/);
    expect(args(runtime, "ENV").join(" ")).toMatch(/NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics/);
  });

  it("exposes 8080, the port the server listens on by default", () => {
    expect(args(runtime, "EXPOSE")).toEqual(["8080"]);
    expect(gpuServerConfigSchema.parse({}).MAAS_PORT).toBe(8080);
  });

  it("declares SageMaker's multi-model and bind-to-port capabilities", () => {
    const labels = args(runtime, "LABEL").join(" ");
    expect(labels).toContain("com.amazonaws.sagemaker.capabilities.multi-models=true");
    expect(labels).toContain("com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true");
  });

  it("starts the compiled server the build stage produces, in exec form", () => {
    const [entrypoint] = args(runtime, "ENTRYPOINT");
    const command = JSON.parse(entrypoint!) as string[];
    expect(command[0]).toBe("node");
    const script = command.at(-1)!;
    expect(args(build, "RUN").join("\n")).toContain(`containers/gpu/build.ts dist/${script}`);
    expect(args(build, "RUN").join("\n")).toContain(`cp dist/${script}`);
  });

  it("does not run as root", () => {
    expect(args(runtime, "USER")).toEqual(["node"]);
  });

  it("copies only context paths that exist and that the .dockerignore allowlist lets through", async () => {
    const allow = (await readFile(join(REPO, "containers/gpu/Dockerfile.dockerignore"), "utf8"))
      .split("\n")
      .filter((line) => line.startsWith("!"))
      .map((line) => line.slice(1).replace(/\/\*\*$/, ""));
    for (const source of contextSources(build)) {
      expect(existsSync(join(REPO, source)), source).toBe(true);
      expect(
        allow.some((pattern) => source === pattern || source.startsWith(`${pattern}/`)),
        source,
      ).toBe(true);
    }
  });
});

describe("the compiled GPU server bundle", () => {
  let outDir: string;
  let inputs: Metafile["inputs"];

  beforeAll(async () => {
    // Inside the repository, so the bundle resolves onnxruntime-node as the image's node_modules would.
    outDir = await mkdtemp(join(REPO, "node_modules", ".cache-gpu-bundle-"));
    inputs = await bundleGpuServer(join(outDir, "server.mjs"));
  });

  afterAll(async () => {
    await rm(outDir, { recursive: true, force: true });
  });

  it("is built only from sources the Dockerfile copies into the build stage", () => {
    const copied = contextSources(build);
    const sources = Object.keys(inputs)
      .map((input) => relative(REPO, resolve(REPO, input)))
      .filter((input) => !input.startsWith("node_modules/"));
    expect(sources.length).toBeGreaterThan(3);
    for (const source of sources) {
      expect(
        copied.some((path) => source === path || source.startsWith(`${path}/`)),
        source,
      ).toBe(true);
    }
  });

  it("starts, answers /ping on CPU, and exits cleanly on SIGTERM", async () => {
    const child = spawn(process.execPath, [join(outDir, "server.mjs"), "serve"], {
      env: { ...process.env, MAAS_PORT: "0", MAAS_HOST: "127.0.0.1", MAAS_EXECUTION_PROVIDERS: "cpu" },
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      const port = await new Promise<number>((resolvePort, reject) => {
        child.once("exit", (code) => reject(new Error(`the server exited with ${code}`)));
        createInterface({ input: child.stdout! }).on("line", (line) => {
          const event = JSON.parse(line) as { message: string; port?: number };
          if (event.message === "listening") resolvePort(event.port!);
        });
      });

      const response = await fetch(`http://127.0.0.1:${port}/ping`);

      expect(response.status).toBe(200);
      expect(await response.json()).toMatchObject({ status: "healthy", executionProvider: "cpu" });
      const exited = new Promise<number | null>((done) => child.once("exit", done));
      child.kill("SIGTERM");
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  });
});
