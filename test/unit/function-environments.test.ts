import { describe, expect, it } from "vitest";
import { ADMIN_ENV, adminConfigSchema, adminEnvironment, loadAdminConfig } from "#lambdas/admin/config.ts";
import {
  INFERENCE_ENV,
  inferenceConfigSchema,
  inferenceEnvironment,
  loadInferenceConfig,
} from "#lambdas/inference/config.ts";
import {
  loadOptimizeConfig,
  OPTIMIZE_ENV,
  optimizeConfigSchema,
  optimizeEnvironment,
} from "#lambdas/optimize/config.ts";
import {
  loadRegisterConfig,
  REGISTER_ENV,
  registerConfigSchema,
  registerEnvironment,
} from "#lambdas/register/config.ts";
import { type LocalResources, localFunctionEnvironments } from "../../local/function-environments.ts";

const RESOURCES: LocalResources = {
  dataDir: "/data",
  table: "local-table",
  bucket: "local-bucket",
  optimizeQueueUrl: "http://127.0.0.1:4566/000000000000/local-optimize",
  sagemakerEndpoint: "local-endpoint",
  sagemakerModelPrefix: "endpoint-models/",
  jobsTable: "local-jobs",
  jobsQueueUrl: "http://127.0.0.1:4566/000000000000/local-jobs",
};

describe("function environment contracts", () => {
  it("build environments that each function's own configuration reads back", () => {
    const inference = loadInferenceConfig(
      inferenceEnvironment({
        registryTable: "table",
        artifactCacheBytes: 3_276_800_000,
        preloadModels: "iris,mlp",
        sagemakerEndpoint: "endpoint",
        sagemakerMode: "single-model",
      }),
    );
    const register = loadRegisterConfig(
      registerEnvironment({
        registryTable: "table",
        optimizeQueueUrl: "https://sqs.us-east-1.amazonaws.com/123456789012/optimize",
        maxModelBytes: 1024,
        lambdaMaxModelBytes: 512,
        workDir: "/tmp/register",
        sagemakerModelPrefix: "endpoint-models/",
      }),
    );
    const optimize = loadOptimizeConfig(
      optimizeEnvironment({ registryTable: "table", leaseSeconds: 960, quantizeReduceRange: false }),
    );
    const admin = loadAdminConfig(adminEnvironment({ registryTable: "table", bucket: "bucket" }));

    expect(inference).toMatchObject({
      MAAS_REGISTRY_TABLE: "table",
      MAAS_ARTIFACT_CACHE_BYTES: 3_276_800_000,
      MAAS_PRELOAD_MODELS: "iris,mlp",
      MAAS_SAGEMAKER_ENDPOINT: "endpoint",
      MAAS_SAGEMAKER_MODE: "single-model",
    });
    expect(register).toMatchObject({
      MAAS_MAX_MODEL_BYTES: 1024,
      MAAS_SAGEMAKER_MODEL_PREFIX: "endpoint-models/",
    });
    expect(optimize).toMatchObject({ MAAS_OPTIMIZE_LEASE_SECONDS: 960, MAAS_QUANTIZE_REDUCE_RANGE: false });
    expect(admin).toEqual({ MAAS_REGISTRY_TABLE: "table", MAAS_BUCKET: "bucket" });
  });

  it("leaves settings that are not given out of the environment", () => {
    expect(inferenceEnvironment({ registryTable: "table", corsOrigins: undefined })).toEqual({
      MAAS_REGISTRY_TABLE: "table",
    });
  });

  it("refuses a setting the function does not read, and the compiler refuses a missing required one", () => {
    // @ts-expect-error: optimizeQueueUrl is required
    const missing = () => registerEnvironment({ registryTable: "table" });
    // @ts-expect-error: the setting is workDir
    const misspelt = () => optimizeEnvironment({ registryTable: "table", workdir: "/tmp" });

    expect(() => loadRegisterConfig(missing())).toThrow(/MAAS_OPTIMIZE_QUEUE_URL/);
    expect(misspelt).toThrow("workdir is not a setting of this function");
  });

  it("name every variable each function's schema reads, besides the one Lambda sets", () => {
    const contracts = [
      [INFERENCE_ENV, inferenceConfigSchema],
      [REGISTER_ENV, registerConfigSchema],
      [OPTIMIZE_ENV, optimizeConfigSchema],
      [ADMIN_ENV, adminConfigSchema],
    ] as const;

    for (const [contract, schema] of contracts) {
      const read = Object.keys(schema.shape).filter((name) => name !== "AWS_LAMBDA_FUNCTION_MEMORY_SIZE");
      expect(Object.values(contract.names).sort()).toEqual(read.sort());
    }
  });
});

describe("the local stack's function environments", () => {
  it("parse under each function's own schema with nothing set in the environment", () => {
    const environments = localFunctionEnvironments(RESOURCES, {});

    expect(loadInferenceConfig(environments.inference)).toMatchObject({
      MAAS_REGISTRY_TABLE: "local-table",
      MAAS_ARTIFACT_DIR: "/data/artifact-cache",
      MAAS_ARTIFACT_CACHE_BYTES: 8 * 1024 ** 3,
      MAAS_SAGEMAKER_ENDPOINT: "local-endpoint",
    });
    expect(loadRegisterConfig(environments.register)).toMatchObject({
      MAAS_WORK_DIR: "/data/register-work",
      MAAS_LAMBDA_MAX_MODEL_BYTES: 512 * 1024 ** 2,
    });
    expect(loadOptimizeConfig(environments.optimize)).toMatchObject({ MAAS_WORK_DIR: "/data/optimize-work" });
    expect(loadAdminConfig(environments.admin)).toEqual({
      MAAS_REGISTRY_TABLE: "local-table",
      MAAS_BUCKET: "local-bucket",
    });
  });

  it("take a function's MAAS_* setting from the process environment over the local default", () => {
    const environments = localFunctionEnvironments(RESOURCES, {
      MAAS_ARTIFACT_CACHE_BYTES: "1048576",
      MAAS_SESSION_MAX: "2",
      MAAS_SESSION_BYTES: "4194304",
      MAAS_BENCHMARK_RUNS: "5",
      MAAS_MAX_MODEL_BYTES: "2048",
      MAAS_API_KEY: "not a function setting",
    });

    expect(loadInferenceConfig(environments.inference)).toMatchObject({
      MAAS_ARTIFACT_CACHE_BYTES: 1_048_576,
      MAAS_SESSION_MAX: 2,
      MAAS_SESSION_BYTES: 4_194_304,
    });
    expect(loadOptimizeConfig(environments.optimize).MAAS_BENCHMARK_RUNS).toBe(5);
    expect(loadRegisterConfig(environments.register).MAAS_MAX_MODEL_BYTES).toBe(2048);
    expect(Object.values(environments).some((environment) => "MAAS_API_KEY" in environment)).toBe(false);
  });

  it("keeps the resources it created, whatever the process environment names", () => {
    const environments = localFunctionEnvironments(RESOURCES, {
      MAAS_REGISTRY_TABLE: "deployed-table",
      MAAS_BUCKET: "deployed-bucket",
      MAAS_OPTIMIZE_QUEUE_URL: "https://sqs.us-east-1.amazonaws.com/123456789012/deployed",
      MAAS_SAGEMAKER_ENDPOINT: "deployed-endpoint",
      MAAS_SAGEMAKER_MODEL_PREFIX: "deployed/",
    });

    expect(environments.inference).toMatchObject({
      MAAS_REGISTRY_TABLE: "local-table",
      MAAS_SAGEMAKER_ENDPOINT: "local-endpoint",
    });
    expect(environments.register).toMatchObject({
      MAAS_REGISTRY_TABLE: "local-table",
      MAAS_OPTIMIZE_QUEUE_URL: RESOURCES.optimizeQueueUrl,
      MAAS_SAGEMAKER_MODEL_PREFIX: "endpoint-models/",
    });
    expect(environments.optimize.MAAS_REGISTRY_TABLE).toBe("local-table");
    expect(environments.admin).toEqual({ MAAS_REGISTRY_TABLE: "local-table", MAAS_BUCKET: "local-bucket" });
  });

  it("lets an explicit lambdaMaxModelBytes win over the process environment", () => {
    const env = { MAAS_LAMBDA_MAX_MODEL_BYTES: "1000" };

    expect(localFunctionEnvironments(RESOURCES, env).register.MAAS_LAMBDA_MAX_MODEL_BYTES).toBe("1000");
    expect(
      localFunctionEnvironments(RESOURCES, env, { lambdaMaxModelBytes: 2000 }).register
        .MAAS_LAMBDA_MAX_MODEL_BYTES,
    ).toBe("2000");
  });
});
