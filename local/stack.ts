import { join, resolve } from "node:path";
import { Logger } from "@aws-lambda-powertools/logger";
import type { LogLevel } from "@aws-lambda-powertools/logger/types";
import { DynamoModelRegistry } from "../lambdas/aws/dynamo-registry.ts";
import { loadInferenceConfig } from "../lambdas/inference/config.ts";
import { createInferenceHandler } from "../lambdas/inference/handler.ts";
import { createInferenceParts, defaultClients, type InferenceParts } from "../lambdas/inference/service.ts";
import { buildIrisModel } from "../models/iris.ts";
import { type Emulators, startEmulators } from "./emulators.ts";
import { type Gateway, startGateway } from "./gateway.ts";
import { seedModel } from "./seed.ts";

export const LOCAL_BUCKET = "maas-models";
export const LOCAL_TABLE = "maas-registry";
export const DEMO_MODEL = "iris";

export interface LocalStackOptions {
  readonly dataDir: string;
  readonly port: number;
  readonly s3Port: number;
  readonly dynamoPort?: number;
  readonly apiKey: string;
  readonly adminKey: string;
  /** Handler logs; "SILENT" for tests. @default "INFO" */
  readonly logLevel?: LogLevel;
  /** Publish and warm the demo model. @default true */
  readonly demo?: boolean;
}

export interface LocalStack {
  readonly url: string;
  readonly emulators: Emulators;
  readonly gateway: Gateway;
  readonly inference: InferenceParts;
  /** Write side of the registry, for seeding models. */
  readonly registry: DynamoModelRegistry;
  readonly bucket: string;
  close(): Promise<void>;
}

/**
 * The whole service in this process: emulators, the inference handler behind a local API Gateway,
 * and the demo model published and warmed so the first request answers at once.
 */
export async function startLocalStack(options: LocalStackOptions): Promise<LocalStack> {
  const dataDir = resolve(options.dataDir);
  const emulators = await startEmulators({
    dataDir,
    s3Port: options.s3Port,
    dynamoPort: options.dynamoPort ?? 0,
    bucket: LOCAL_BUCKET,
    table: LOCAL_TABLE,
  });
  try {
    const config = loadInferenceConfig({
      MAAS_REGISTRY_TABLE: LOCAL_TABLE,
      MAAS_ARTIFACT_DIR: join(dataDir, "artifact-cache"),
      MAAS_ARTIFACT_CACHE_BYTES: String(8 * 1024 ** 3),
      MAAS_REGISTRY_TTL_MS: "1000",
      MAAS_REGISTRY_MISS_TTL_MS: "250",
    });
    // The function's own client set-up, pointed at the emulators: the same SDK code paths as in AWS.
    const { region, credentials } = emulators;
    const clients = defaultClients({
      s3: { region, credentials, endpoint: emulators.s3Endpoint, forcePathStyle: true },
      dynamo: { region, credentials, endpoint: emulators.dynamoEndpoint },
    });
    const inference = createInferenceParts(config, clients);
    const registry = new DynamoModelRegistry(emulators.dynamoClient(), LOCAL_TABLE);

    if (options.demo ?? true) {
      const demo = await seedModel({
        s3: emulators.s3Client(),
        registry,
        bucket: LOCAL_BUCKET,
        name: DEMO_MODEL,
        version: 1,
        bytes: buildIrisModel(),
      });
      await inference.runner.run(
        demo,
        [{ name: "features", type: "float32", dims: [1, 4], data: new Float32Array(4) }],
        ["label"],
      );
    }

    const logger = new Logger({ serviceName: "maas-inference", logLevel: options.logLevel ?? "INFO" });
    const gateway = await startGateway({
      port: options.port,
      handler: createInferenceHandler(inference.service, logger),
      apiKey: options.apiKey,
      adminKey: options.adminKey,
    });
    return {
      url: gateway.url,
      emulators,
      gateway,
      inference,
      registry,
      bucket: LOCAL_BUCKET,
      async close() {
        await gateway.close();
        await inference.sessions.close();
        clients.s3.destroy();
        clients.dynamo.destroy();
        await emulators.stop();
      },
    };
  } catch (error) {
    await emulators.stop();
    throw error;
  }
}
