import { Logger } from "@aws-lambda-powertools/logger";
import type { CloudWatchClient } from "@aws-sdk/client-cloudwatch";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { DeleteObjectsCommand, S3Client, type S3ClientConfig } from "@aws-sdk/client-s3";
import { S3JobObjects } from "#aws/jobs/aws-jobs.ts";
import { bodyText, errorResponse, json, type ProxyHandler } from "#aws/lambda/api-gateway.ts";
import { CloudWatchFigures } from "#aws/metrics/cloudwatch-figures.ts";
import { DynamoModelRegistry } from "#aws/registry/dynamo-registry.ts";
import {
  type AdminDeps,
  AdminService,
  matchAdminRoute,
  type VersionUploads,
} from "#core/admin/admin-service.ts";
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
      const route = matchAdminRoute(event.httpMethod, event.path, event.queryStringParameters);
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

/**
 * Publish uploads presigned in the model bucket with the function's own credentials (its role must be
 * allowed to put `models/*`), through the presigner asynchronous inference uses.
 */
export function s3VersionUploads(bucket: string, config: S3ClientConfig = {}): VersionUploads {
  // The asynchronous inputs' presigner: it signs no checksum of an empty body into the URLs.
  const objects = new S3JobObjects(bucket, config);
  return {
    presignPut: (key, expiresSeconds) => objects.presignPut(key, expiresSeconds),
    presignMultipart: (key, parts, expiresSeconds) => objects.presignMultipart(key, parts, expiresSeconds),
    exists: async (key) => (await objects.size(key)) !== undefined,
  };
}

export function createAdminDeps(
  config: AdminConfig,
  s3: S3Client,
  dynamo: DynamoDBClient,
  overrides: Pick<AdminDeps, "figures" | "uploads"> = {},
): AdminDeps {
  return {
    // The Lambda environment's region and credentials; the local stack passes its own.
    uploads: overrides.uploads ?? s3VersionUploads(config.MAAS_BUCKET),
    ...(overrides.figures === undefined ? {} : { figures: overrides.figures }),
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
    const dynamo = new DynamoDBClient({});
    // The console's charts, from the metrics the inference function emits; the client is loaded on
    // the first figures request, not on every cold start.
    let cloudWatch: CloudWatchClient | undefined;
    const figures = new CloudWatchFigures({
      getMetricData: async (input) => {
        const { CloudWatchClient, GetMetricDataCommand } = await import("@aws-sdk/client-cloudwatch");
        cloudWatch ??= new CloudWatchClient({});
        return cloudWatch.send(new GetMetricDataCommand(input));
      },
    });
    defaultHandler = createAdminHandler(
      new AdminService(createAdminDeps(config, new S3Client({}), dynamo, { figures })),
      defaultLogger,
    );
  }
  return defaultHandler(event, context);
};
