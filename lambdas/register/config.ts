import * as z from "zod";
import { parseConfig } from "#core/config.ts";
import { defineEnv } from "#core/env-contract.ts";

const GiB = 1024 ** 3;
const positiveInt = z.coerce.number().int().positive();

/** The register function's environment: each setting, its variable and how the function reads it. */
export const REGISTER_ENV = defineEnv({
  registryTable: ["MAAS_REGISTRY_TABLE", z.string().min(1)],
  optimizeQueueUrl: ["MAAS_OPTIMIZE_QUEUE_URL", z.string().url()],
  // Registration copies each model with one CopyObject, which S3 caps at 5 GiB.
  maxModelBytes: [
    "MAAS_MAX_MODEL_BYTES",
    positiveInt.max(5 * GiB, "at most 5 GiB: one S3 CopyObject carries each model").default(2 * GiB),
  ],
  lambdaMaxModelBytes: ["MAAS_LAMBDA_MAX_MODEL_BYTES", positiveInt.default(512 * 1024 ** 2)],
  workDir: ["MAAS_WORK_DIR", z.string().default("/tmp/maas-register")],
  /** The SageMaker endpoint's model prefix in the model bucket (its ModelDataUrl); unset: no SageMaker. */
  sagemakerModelPrefix: ["MAAS_SAGEMAKER_MODEL_PREFIX", z.string().min(1).optional()],
});

/** The environment a stack gives the register function. */
export const registerEnvironment = REGISTER_ENV.environment;

export const registerConfigSchema = z.object(REGISTER_ENV.shape);
export type RegisterConfig = z.infer<typeof registerConfigSchema>;

export function loadRegisterConfig(env: Record<string, string | undefined>): RegisterConfig {
  return parseConfig(registerConfigSchema, env, "register");
}
