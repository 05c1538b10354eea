import { join } from "node:path";
import { ADMIN_ENV, adminEnvironment } from "#lambdas/admin/config.ts";
import { INFERENCE_ENV, inferenceEnvironment } from "#lambdas/inference/config.ts";
import { JOBS_ENV, jobsEnvironment } from "#lambdas/jobs/config.ts";
import { OPTIMIZE_ENV, optimizeEnvironment } from "#lambdas/optimize/config.ts";
import { REGISTER_ENV, registerEnvironment } from "#lambdas/register/config.ts";

/** What the local stack created for its functions, as the CDK stack's resources are in AWS. */
export interface LocalResources {
  readonly dataDir: string;
  readonly table: string;
  readonly bucket: string;
  readonly optimizeQueueUrl: string;
  readonly sagemakerEndpoint: string;
  readonly sagemakerModelPrefix: string;
  readonly jobsTable: string;
  readonly jobsQueueUrl: string;
}

export interface LocalFunctionEnvironments {
  readonly inference: Record<string, string>;
  readonly register: Record<string, string>;
  readonly optimize: Record<string, string>;
  readonly admin: Record<string, string>;
  /** The jobs worker: the inference function's settings with its own deadline, and its own. */
  readonly jobs: Record<string, string>;
}

/** The jobs worker's deadline per job: the CDK stack's, under its 15-minute timeout. */
export const JOB_DEADLINE_MS = 14 * 60 * 1000;

/**
 * Each function's environment in the local stack: the stack's local values, over them any setting of
 * the function's contract that `env` (this process's environment) sets, and the resources the stack
 * created, which nothing redirects. `lambdaMaxModelBytes`, when given, wins over `env` as well.
 */
export function localFunctionEnvironments(
  resources: LocalResources,
  env: Readonly<Record<string, string | undefined>>,
  options: { readonly lambdaMaxModelBytes?: number } = {},
): LocalFunctionEnvironments {
  const { dataDir } = resources;
  const inference = {
    ...inferenceEnvironment({
      registryTable: resources.table,
      artifactDir: join(dataDir, "artifact-cache"),
      artifactCacheBytes: 8 * 1024 ** 3,
      registryTtlMs: 1000,
      registryMissTtlMs: 250,
      sagemakerEndpoint: resources.sagemakerEndpoint,
      jobsTable: resources.jobsTable,
      jobsQueueUrl: resources.jobsQueueUrl,
      asyncBucket: resources.bucket,
      captureBucket: resources.bucket,
    }),
    ...INFERENCE_ENV.pick(env, [
      "registryTable",
      "sagemakerEndpoint",
      "jobsTable",
      "jobsQueueUrl",
      "asyncBucket",
    ]),
  };
  return {
    inference,
    jobs: {
      ...inference,
      ...inferenceEnvironment({
        registryTable: resources.table,
        inferenceDeadlineMs: JOB_DEADLINE_MS,
      }),
      ...jobsEnvironment({}),
      ...JOBS_ENV.pick(env),
    },
    register: {
      ...registerEnvironment({
        registryTable: resources.table,
        optimizeQueueUrl: resources.optimizeQueueUrl,
        workDir: join(dataDir, "register-work"),
        sagemakerModelPrefix: resources.sagemakerModelPrefix,
        lambdaMaxModelBytes: options.lambdaMaxModelBytes,
      }),
      ...REGISTER_ENV.pick(env, [
        "registryTable",
        "optimizeQueueUrl",
        "sagemakerModelPrefix",
        ...(options.lambdaMaxModelBytes === undefined ? [] : (["lambdaMaxModelBytes"] as const)),
      ]),
    },
    optimize: {
      ...optimizeEnvironment({
        registryTable: resources.table,
        workDir: join(dataDir, "optimize-work"),
      }),
      ...OPTIMIZE_ENV.pick(env, ["registryTable"]),
    },
    admin: {
      ...adminEnvironment({ registryTable: resources.table, bucket: resources.bucket }),
      ...ADMIN_ENV.pick(env, ["registryTable", "bucket"]),
    },
  };
}
