import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Duration, Size } from "aws-cdk-lib";
import { Role, ServicePrincipal } from "aws-cdk-lib/aws-iam";
import { Architecture, Runtime, Tracing } from "aws-cdk-lib/aws-lambda";
import {
  type BundlingOptions,
  type ICommandHooks,
  NodejsFunction,
  type NodejsFunctionProps,
  OutputFormat,
} from "aws-cdk-lib/aws-lambda-nodejs";
import { type ILogGroup, LogGroup, RetentionDays } from "aws-cdk-lib/aws-logs";
import type { Construct } from "constructs";
import { SESSION_WORKER_BUNDLE, SESSION_WORKER_SOURCE } from "#aws/onnx/session-protocol.ts";
import { metricsEnvironment } from "./maas-metrics.ts";
import { acknowledge, acknowledgeChild } from "./nag.ts";
import { packageRoot } from "./package-root.ts";
import { sharpPackages } from "./sharp-packages.ts";

/** The onnxruntime-node binaries Lambda can load, by function architecture. */
export type OnnxRuntimeArch = "x64" | "arm64";

export interface MaasFunctionProps
  extends Omit<
    NodejsFunctionProps,
    "entry" | "logGroup" | "logRetention" | "logRetentionRole" | "logRetentionRetryOptions"
  > {
  /** The handler module (TypeScript), e.g. `lambdas/inference/handler.ts`. */
  readonly entry: string;
  /**
   * Ship onnxruntime-node (external to the bundle) and only the linux binaries of this function's
   * architecture. Functions that never load it should say `false`.
   * @default true
   */
  readonly withOnnxRuntime?: boolean;
  /**
   * Ship sharp (external to the bundle, imported by image task versions only) with the linux binaries
   * of this function's architecture only; another architecture's are fetched once with `npm pack`.
   * @default false
   */
  readonly withSharp?: boolean;
  /**
   * Packages loaded only by dynamic `import()` on paths a cold start rarely takes (the SageMaker
   * client): each is bundled on its own into the asset's `node_modules`, so the handler's file does not
   * carry (and Node does not compile) their code until a request needs it.
   * @default []
   */
  readonly separateModules?: readonly string[];
  /**
   * Where the function logs; the role is granted to write there.
   * @default - a log group of its own, kept for `logGroupRetention`
   */
  readonly logGroup?: ILogGroup;
  /**
   * Retention of the log group made for the function; ignored when `logGroup` is given.
   * @default RetentionDays.ONE_MONTH
   */
  readonly logGroupRetention?: RetentionDays;
  /**
   * Powertools' service name for the function (`POWERTOOLS_SERVICE_NAME`: the `service` of its logs and
   * cold start metric); with it, the function also gets `POWERTOOLS_METRICS_NAMESPACE` (the service's
   * namespace). Metrics leave through the function's log group (EMF): no permission is added.
   * @default - neither variable: the function emits no metrics
   */
  readonly metricsService?: string;
}

/** Lambda's own bounds for memory and /tmp, in MiB. */
export const LAMBDA_MEMORY_RANGE_MB = { min: 128, max: 10_240 } as const;
export const LAMBDA_EPHEMERAL_RANGE_MB = { min: 512, max: 10_240 } as const;

const NODE_22_REASON =
  "Node.js 22 is the project's pinned runtime (nodejs22.x, supported by Lambda until 2027-04): bundles target node22 and onnxruntime-node is tested on it.";

const BUNDLE_TARGET = "node22";

/** esbuild's ESM output has no `require`; CommonJS dependencies (protobufjs, powertools) need one. */
const ESM_REQUIRE_BANNER =
  "import { createRequire as __maasCreateRequire } from 'node:module'; const require = __maasCreateRequire(import.meta.url);";

/**
 * A Node.js 22 function with the project's defaults: arm64, ESM bundle with its source map beside it
 * (read when an error is logged, not loaded at start-up: see lambdas/aws/lambda/stack-map.ts), X-Ray tracing,
 * its own log group with a retention, a role without managed policies, and, unless told otherwise,
 * onnxruntime-node installed next to the bundle for this architecture only.
 */
export class MaasFunction extends NodejsFunction {
  /** Whether onnxruntime-node travels with this function's asset. */
  public readonly withOnnxRuntime: boolean;

  constructor(scope: Construct, id: string, props: MaasFunctionProps) {
    const {
      withOnnxRuntime: withOnnxRuntimeProp,
      withSharp = false,
      logGroupRetention,
      separateModules = [],
      metricsService,
      ...functionProps
    } = props;
    const withOnnxRuntime = withOnnxRuntimeProp ?? true;
    const architecture = props.architecture ?? Architecture.ARM_64;
    const memorySize = props.memorySize ?? (withOnnxRuntime ? 3008 : 512);
    const ephemeralStorageSize =
      props.ephemeralStorageSize ?? (withOnnxRuntime ? Size.gibibytes(4) : Size.mebibytes(512));
    validate(props, { withOnnxRuntime, memorySize, ephemeralStorageMb: ephemeralStorageSize.toMebibytes() });
    const ortArch = architecture === Architecture.X86_64 ? "x64" : "arm64";

    // Built beside the function: a subclass cannot create children before super().
    const logGroup =
      props.logGroup ??
      new LogGroup(scope, `${id}Logs`, { retention: logGroupRetention ?? RetentionDays.ONE_MONTH });
    // Without AWSLambdaBasicExecutionRole: the function writes to its own log group and nothing else.
    const role =
      props.role ?? new Role(scope, `${id}Role`, { assumedBy: new ServicePrincipal("lambda.amazonaws.com") });
    logGroup.grantWrite(role);

    super(scope, id, {
      runtime: Runtime.NODEJS_22_X,
      timeout: Duration.seconds(30),
      tracing: Tracing.ACTIVE,
      ...functionProps,
      // The caller's variables win: they are the more specific.
      environment: {
        ...(metricsService === undefined ? {} : metricsEnvironment(metricsService)),
        ...props.environment,
      },
      architecture,
      memorySize,
      ephemeralStorageSize,
      logGroup,
      role,
      bundling: mergeBundling(
        props.bundling,
        withOnnxRuntime ? onnxRuntimeHooks(props.entry, ortArch) : [],
        [...separateModules, ...(withSharp ? ["sharp"] : [])],
        separateModules.flatMap((name) =>
          separateModuleCommands(name, props.entry, props.bundling?.target ?? BUNDLE_TARGET),
        ),
        // When bundling only: another architecture's binaries may have to be fetched.
        () => (withSharp ? sharpCommands(props.entry, ortArch) : []),
      ),
    });
    this.withOnnxRuntime = withOnnxRuntime;

    if ((props.tracing ?? Tracing.ACTIVE) === Tracing.ACTIVE) {
      acknowledgeChild(
        role,
        "DefaultPolicy",
        "AwsSolutions-IAM5[Resource::*]",
        "X-Ray tracing: xray:PutTraceSegments and xray:PutTelemetryRecords support no resource-level permissions.",
      );
    }
    if (this.runtime === Runtime.NODEJS_22_X) {
      for (const rule of ["AwsSolutions-L1", "Serverless-LambdaLatestVersion"]) {
        acknowledge(this, rule, NODE_22_REASON);
      }
    }
  }
}

function validate(
  props: MaasFunctionProps,
  resolved: { withOnnxRuntime: boolean; memorySize: number; ephemeralStorageMb: number },
): void {
  const { min: memMin, max: memMax } = LAMBDA_MEMORY_RANGE_MB;
  if (
    !Number.isInteger(resolved.memorySize) ||
    resolved.memorySize < memMin ||
    resolved.memorySize > memMax
  ) {
    throw new Error(
      `memorySize must be an integer from ${memMin} to ${memMax} MB, got ${resolved.memorySize}`,
    );
  }
  const { min: tmpMin, max: tmpMax } = LAMBDA_EPHEMERAL_RANGE_MB;
  if (resolved.ephemeralStorageMb < tmpMin || resolved.ephemeralStorageMb > tmpMax) {
    throw new Error(
      `ephemeralStorageSize must be from ${tmpMin} to ${tmpMax} MiB, got ${resolved.ephemeralStorageMb}`,
    );
  }
  if (resolved.withOnnxRuntime && props.bundling?.forceDockerBundling) {
    throw new Error(
      "withOnnxRuntime copies onnxruntime-node from this machine's node_modules and cannot run inside Docker bundling (forceDockerBundling)",
    );
  }
  if (resolved.withOnnxRuntime && process.platform === "win32") {
    throw new Error(
      "withOnnxRuntime installs onnxruntime-node with POSIX shell commands; synthesize on Linux, macOS or WSL",
    );
  }
}

function mergeBundling(
  caller: BundlingOptions | undefined,
  onnxRuntimeCommands: string[],
  externalModules: readonly string[],
  moduleCommands: string[],
  bundlingCommands: () => string[],
): BundlingOptions {
  const format = caller?.format ?? OutputFormat.ESM;
  const banner =
    [format === OutputFormat.ESM ? ESM_REQUIRE_BANNER : undefined, caller?.banner]
      .filter(Boolean)
      .join("\n") || undefined;
  const external = [...(onnxRuntimeCommands.length > 0 ? ["onnxruntime-node"] : []), ...externalModules];
  const callerHooks = caller?.commandHooks;
  const commandHooks: ICommandHooks = {
    beforeBundling: (inputDir, outputDir) => callerHooks?.beforeBundling(inputDir, outputDir) ?? [],
    beforeInstall: (inputDir, outputDir) => callerHooks?.beforeInstall(inputDir, outputDir) ?? [],
    afterBundling: (inputDir, outputDir) => [
      ...[...onnxRuntimeCommands, ...moduleCommands, ...bundlingCommands()].map((command) =>
        command.replaceAll(OUTPUT_DIR, shellQuote(outputDir)),
      ),
      ...(callerHooks?.afterBundling(inputDir, outputDir) ?? []),
    ],
  };
  return {
    target: BUNDLE_TARGET,
    minify: true,
    sourceMap: true,
    sourcesContent: false,
    // Prefer the ESM builds of dependencies (the AWS SDK ships both): better tree shaking.
    mainFields: ["module", "main"],
    // The SDK is bundled, not taken from the runtime: the version tested is the version deployed.
    bundleAwsSDK: true,
    ...caller,
    format,
    banner,
    externalModules: [...new Set([...external, ...(caller?.externalModules ?? [])])],
    commandHooks,
  };
}

const OUTPUT_DIR = "<maas:output-dir>";

/**
 * Shell commands that copy onnxruntime-node and onnxruntime-common from this project into the asset's
 * node_modules, taking only `bin/napi-v6/linux/<arch>` of the binaries (offline: no npm install), and
 * bundle the session worker (the thread each onnxruntime session runs in) beside the handler.
 */
function onnxRuntimeHooks(entry: string, arch: OnnxRuntimeArch): string[] {
  const ort = packageRoot("onnxruntime-node", dirname(resolve(entry)));
  const common = packageRoot("onnxruntime-common", ort);
  const binaries = join(ort, "bin", "napi-v6", "linux", arch);
  if (!existsSync(join(binaries, "onnxruntime_binding.node"))) {
    throw new Error(`onnxruntime-node has no linux ${arch} binding under ${binaries}`);
  }
  const ortOut = `${OUTPUT_DIR}/node_modules/onnxruntime-node`;
  const commonOut = `${OUTPUT_DIR}/node_modules/onnxruntime-common`;
  const q = shellQuote;
  return [
    `mkdir -p ${ortOut}/bin/napi-v6/linux ${commonOut}`,
    `cp -R ${q(join(ort, "package.json"))} ${q(join(ort, "dist"))} ${ortOut}/`,
    `cp -R ${q(binaries)} ${ortOut}/bin/napi-v6/linux/`,
    `cp -R ${q(join(common, "package.json"))} ${q(join(common, "dist"))} ${commonOut}/`,
    [
      q(esbuildBinary(entry)),
      q(fileURLToPath(SESSION_WORKER_SOURCE)),
      ...["--bundle", "--platform=node", "--format=esm", `--target=${BUNDLE_TARGET}`, "--minify"].map(q),
      "--external:onnxruntime-node",
      "--log-level=error",
      `--outfile=${OUTPUT_DIR}/${SESSION_WORKER_BUNDLE}`,
    ].join(" "),
  ];
}

/** Shell commands that copy sharp, its dependencies and this architecture's binaries into the asset's node_modules. */
function sharpCommands(entry: string, arch: OnnxRuntimeArch): string[] {
  const q = shellQuote;
  return sharpPackages(dirname(resolve(entry)), arch).flatMap(({ name, dir, files }) =>
    files.map((file) => {
      const target = join(`${OUTPUT_DIR}/node_modules/${name}`, dirname(file));
      // The file part stays unquoted: libvips' library is a glob (its soname's version).
      const source = file === "." ? `${q(dir)}/.` : `${q(dir)}/${file}`;
      return `mkdir -p ${target} && cp -R ${source} ${target}/`;
    }),
  );
}

function esbuildBinary(entry: string): string {
  return join(packageRoot("esbuild", dirname(resolve(entry))), "bin", "esbuild");
}

/**
 * Shell commands that bundle package `name` (its ESM build) into `node_modules/<name>/index.mjs` of the
 * asset, with a package.json that makes it the package's entry: the handler's external `import(name)`
 * resolves there as it would to the installed package.
 */
function separateModuleCommands(name: string, entry: string, target: string): string[] {
  const root = packageRoot(name, dirname(resolve(entry)));
  const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
    module?: string;
    main?: string;
  };
  const source = join(root, manifest.module ?? manifest.main ?? "index.js");
  const esbuild = esbuildBinary(entry);
  const out = `${OUTPUT_DIR}/node_modules/${name}`;
  const packageJson = JSON.stringify({ name, type: "module", main: "index.mjs" });
  const q = shellQuote;
  const args = [
    "--bundle",
    "--platform=node",
    "--format=esm",
    `--target=${target}`,
    "--minify",
    "--main-fields=module,main",
    "--log-level=error",
    `--banner:js=${ESM_REQUIRE_BANNER}`,
  ];
  return [
    `mkdir -p ${out}`,
    `printf '%s' ${q(packageJson)} > ${out}/package.json`,
    [q(esbuild), q(source), ...args.map(q), `--outfile=${out}/index.mjs`].join(" "),
  ];
}

function shellQuote(path: string): string {
  return `'${path.replaceAll("'", "'\\''")}'`;
}
