import { Logger } from "@aws-lambda-powertools/logger";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { DeleteObjectsCommand, S3Client } from "@aws-sdk/client-s3";
import { bodyText, errorResponse, json, type ProxyHandler } from "#aws/lambda/api-gateway.ts";
import { DynamoModelRegistry } from "#aws/registry/dynamo-registry.ts";
import { type AdminDeps, AdminService, matchAdminRoute } from "#core/admin/admin-service.ts";
import { manifestKey, modelKey } from "#core/registry/manifest.ts";
import { type AdminConfig, loadAdminConfig } from "./config.ts";

export { type AdminConfig, adminConfigSchema, loadAdminConfig } from "./config.ts";

/** Registry management behind /admin (IAM-authorized in AWS, the admin key locally). */
export function createAdminHandler(service: AdminService, logger: Logger): ProxyHandler {
  return async (event, context) => {
    logger.addContext(context);
    const started = performance.now();
    let result: Awaited<ReturnType<ProxyHandler>>;
    try {
      const route = matchAdminRoute(event.httpMethod, event.path);
      const outcome = await service.handle(route, bodyText(event));
      result = json(outcome.status, outcome.body);
    } catch (error) {
      result = errorResponse(error, logger);
    }
    logger.info("admin request", {
      method: event.httpMethod,
      path: event.path,
      status: result.statusCode,
      caller: event.requestContext?.identity?.userArn ?? undefined,
      latencyMs: Math.round((performance.now() - started) * 1000) / 1000,
    });
    return result;
  };
}

export function createAdminDeps(config: AdminConfig, s3: S3Client, dynamo: DynamoDBClient): AdminDeps {
  return {
    registry: new DynamoModelRegistry(dynamo, config.MAAS_REGISTRY_TABLE),
    deleteUpload: async (name, version) => {
      await s3.send(
        new DeleteObjectsCommand({
          Bucket: config.MAAS_BUCKET,
          Delete: {
            Objects: [{ Key: modelKey(name, version) }, { Key: manifestKey(name, version) }],
            Quiet: true,
          },
        }),
      );
    },
    now: () => new Date().toISOString(),
  };
}

const defaultLogger = new Logger({ serviceName: "maas-admin" });
let defaultHandler: ProxyHandler | undefined;

export const handler: ProxyHandler = (event, context) => {
  if (defaultHandler === undefined) {
    const config = loadAdminConfig(process.env);
    defaultHandler = createAdminHandler(
      new AdminService(createAdminDeps(config, new S3Client({}), new DynamoDBClient({}))),
      defaultLogger,
    );
  }
  return defaultHandler(event, context);
};
