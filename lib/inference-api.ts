import {
  AccessLogField,
  AccessLogFormat,
  ApiKey,
  ApiKeySourceType,
  AuthorizationType,
  type CorsOptions,
  EndpointType,
  LambdaIntegration,
  LogGroupLogDestination,
  MethodLoggingLevel,
  Period,
  RestApi,
  type UsagePlan,
} from "aws-cdk-lib/aws-apigateway";
import type { IFunction } from "aws-cdk-lib/aws-lambda";
import { LogGroup, RetentionDays } from "aws-cdk-lib/aws-logs";
import { Construct } from "constructs";
import { acknowledge, acknowledgeChild } from "./nag.ts";

export interface InferenceThrottle {
  /** Steady-state requests per second. */
  readonly rateLimit: number;
  /** Requests allowed in a burst above the rate. */
  readonly burstLimit: number;
}

export interface InferenceQuota {
  /** Requests allowed per period and API key. */
  readonly limit: number;
  /** @default Period.DAY */
  readonly period?: Period;
}

export interface InferenceApiProps {
  /** Serves `/v2/*` (the Open Inference Protocol), a function or an alias. */
  readonly inference: IFunction;
  /** Serves `/admin/*` behind IAM authorization. */
  readonly admin: IFunction;
  /**
   * Stage-wide throttle, also applied per API key by the usage plan.
   * @default { rateLimit: 100, burstLimit: 200 }
   */
  readonly throttle?: InferenceThrottle;
  /**
   * Request quota of the inference API key.
   * @default - no quota
   */
  readonly quota?: InferenceQuota;
  /**
   * Browser origins allowed to call `/v2/*` (`https://app.example.com`, or `*` alone).
   * @default - none: no CORS preflight routes
   */
  readonly corsOrigins?: readonly string[];
  /**
   * Create the account-level role API Gateway needs to write logs to CloudWatch. Turn off when the
   * account (region) already has one configured.
   * @default true
   */
  readonly cloudWatchRole?: boolean;
  /** @default "prod" */
  readonly stageName?: string;
  /** @default RetentionDays.ONE_MONTH */
  readonly accessLogRetention?: RetentionDays;
}

export const DEFAULT_THROTTLE: InferenceThrottle = { rateLimit: 100, burstLimit: 200 };
/** The quota period when a quota names none. */
export const DEFAULT_QUOTA_PERIOD = Period.DAY;

/**
 * The public REST API: `/v2/*` for inference (API key + usage plan; health probes open), `/admin/*`
 * with IAM authorization so that the inference key cannot reach it. JSON access logs, X-Ray tracing,
 * stage throttling. Payloads are capped at 10 MB by API Gateway itself.
 */
export class InferenceApi extends Construct {
  public readonly api: RestApi;
  public readonly apiKey: ApiKey;
  public readonly usagePlan: UsagePlan;
  public readonly accessLogs: LogGroup;

  constructor(scope: Construct, id: string, props: InferenceApiProps) {
    super(scope, id);
    const throttle = props.throttle ?? DEFAULT_THROTTLE;
    const corsOrigins = props.corsOrigins ?? [];
    validateProps(props, throttle, corsOrigins);

    this.accessLogs = new LogGroup(this, "AccessLogs", {
      retention: props.accessLogRetention ?? RetentionDays.ONE_MONTH,
    });
    this.api = new RestApi(this, "Api", {
      description: "serverless-maas: Open Inference Protocol (V2) and model administration",
      // Regional: callers in the region skip CloudFront's extra hop; put a CDN in front if needed.
      endpointConfiguration: { types: [EndpointType.REGIONAL] },
      cloudWatchRole: props.cloudWatchRole ?? true,
      apiKeySourceType: ApiKeySourceType.HEADER,
      // Every body as bytes, base64 to the functions and decoded on the way back: the binary tensor data
      // extension's bodies stay intact, and binary responses decode whatever the caller's Accept says.
      binaryMediaTypes: ["*/*"],
      deployOptions: {
        stageName: props.stageName ?? "prod",
        tracingEnabled: true,
        accessLogDestination: new LogGroupLogDestination(this.accessLogs),
        accessLogFormat: accessLogFormat(),
        // Execution logs for errors only: INFO would log every request twice.
        loggingLevel: MethodLoggingLevel.ERROR,
        dataTraceEnabled: false,
        throttlingRateLimit: throttle.rateLimit,
        throttlingBurstLimit: throttle.burstLimit,
      },
    });

    const inference = new LambdaIntegration(props.inference, { allowTestInvoke: false });
    const admin = new LambdaIntegration(props.admin, { allowTestInvoke: false });
    const keyed = { apiKeyRequired: true };
    const cors: CorsOptions | undefined =
      corsOrigins.length > 0
        ? {
            allowOrigins: [...corsOrigins],
            allowMethods: ["GET", "POST", "OPTIONS"],
            allowHeaders: ["Content-Type", "X-Api-Key", "Authorization", "Inference-Header-Content-Length"],
          }
        : undefined;

    const v2 = this.api.root.addResource("v2", cors ? { defaultCorsPreflightOptions: cors } : {});
    const serverMetadata = v2.addMethod("GET", inference, keyed);
    const v2Proxy = v2.addResource("{proxy+}").addMethod("ANY", inference, keyed);
    // OpenAI's embeddings API (`/v1/embeddings`, `/v1/models`), on the same key.
    const v1Proxy = this.api.root
      .addResource("v1", cors ? { defaultCorsPreflightOptions: cors } : {})
      .addResource("{proxy+}")
      .addMethod("ANY", inference, keyed);
    const health = v2.addResource("health");
    const live = health.addResource("live").addMethod("GET", inference);
    const ready = health.addResource("ready").addMethod("GET", inference);
    const adminProxy = this.api.root
      .addResource("admin")
      .addResource("{proxy+}")
      .addMethod("ANY", admin, { authorizationType: AuthorizationType.IAM });

    this.usagePlan = this.api.addUsagePlan("InferencePlan", {
      description: "Inference callers: throttle and quota per API key",
      throttle,
      quota: props.quota
        ? { limit: props.quota.limit, period: props.quota.period ?? DEFAULT_QUOTA_PERIOD }
        : undefined,
      apiStages: [{ api: this.api, stage: this.api.deploymentStage }],
    });
    this.apiKey = new ApiKey(this, "InferenceKey", { description: "serverless-maas inference key" });
    this.usagePlan.addApiKey(this.apiKey);

    acknowledge(this.api, "AwsSolutions-APIG2", BODY_VALIDATION_REASON);
    acknowledge(this.api.deploymentStage, "AwsSolutions-APIG3", WAF_REASON);
    for (const method of [serverMetadata, v2Proxy, v1Proxy]) {
      acknowledge(method, "AwsSolutions-APIG4", API_KEY_REASON);
      acknowledge(method, "AwsSolutions-COG4", API_KEY_REASON);
    }
    for (const method of [live, ready]) {
      acknowledge(method, "AwsSolutions-APIG4", HEALTH_REASON);
      acknowledge(method, "AwsSolutions-COG4", HEALTH_REASON);
    }
    acknowledge(
      adminProxy,
      "AwsSolutions-COG4",
      "Admin callers are AWS principals: IAM (SigV4) authorization.",
    );
    for (const method of this.api.methods.filter((candidate) => candidate.httpMethod === "OPTIONS")) {
      acknowledge(method, "AwsSolutions-COG4", "CORS preflight: browsers send it without credentials.");
    }
    acknowledgeChild(
      this.api,
      "CloudWatchRole",
      "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
      "API Gateway's account-level logging role; this AWS managed policy is the one API Gateway documents for it.",
    );
  }
}

const BODY_VALIDATION_REASON =
  "Bodies go to one greedy proxy route per API; the handler validates them (zod) against each model's signature, which API Gateway models cannot express. API Gateway still caps payloads at 10 MB.";
const WAF_REASON =
  "No WAF by default (fixed monthly cost); API keys, the usage plan and stage throttling bound abuse. Associate a web ACL with the stage where needed.";
const API_KEY_REASON =
  "Inference callers are identified by API key under a usage plan (throttle, quota), as designed; put an authorizer in front for per-user identities.";
const HEALTH_REASON =
  "Liveness and readiness probes are open by design (KServe/Triton convention) and reveal no model data.";

function accessLogFormat(): AccessLogFormat {
  return AccessLogFormat.custom(
    JSON.stringify({
      requestId: AccessLogField.contextRequestId(),
      extendedRequestId: AccessLogField.contextExtendedRequestId(),
      requestTime: AccessLogField.contextRequestTime(),
      ip: AccessLogField.contextIdentitySourceIp(),
      userAgent: AccessLogField.contextIdentityUserAgent(),
      caller: AccessLogField.contextIdentityCaller(),
      userArn: AccessLogField.contextIdentityUserArn(),
      apiKeyId: AccessLogField.contextIdentityApiKeyId(),
      httpMethod: AccessLogField.contextHttpMethod(),
      resourcePath: AccessLogField.contextResourcePath(),
      path: AccessLogField.contextPath(),
      protocol: AccessLogField.contextProtocol(),
      status: AccessLogField.contextStatus(),
      responseLength: AccessLogField.contextResponseLength(),
      responseLatency: AccessLogField.contextResponseLatency(),
      integrationLatency: AccessLogField.contextIntegrationLatency(),
      integrationStatus: AccessLogField.contextIntegrationStatus(),
      errorMessage: AccessLogField.contextErrorMessage(),
      errorType: AccessLogField.contextErrorResponseType(),
      xrayTraceId: AccessLogField.contextXrayTraceId(),
    }),
  );
}

const ORIGIN = /^https?:\/\/[A-Za-z0-9.-]+(:\d{1,5})?$/;

function validateProps(
  props: InferenceApiProps,
  throttle: InferenceThrottle,
  corsOrigins: readonly string[],
) {
  if (!(Number.isFinite(throttle.rateLimit) && throttle.rateLimit > 0)) {
    throw new Error(`throttle.rateLimit must be a positive number, got ${throttle.rateLimit}`);
  }
  if (!Number.isInteger(throttle.burstLimit) || throttle.burstLimit < 1) {
    throw new Error(`throttle.burstLimit must be a positive integer, got ${throttle.burstLimit}`);
  }
  if (props.quota && (!Number.isInteger(props.quota.limit) || props.quota.limit < 1)) {
    throw new Error(`quota.limit must be a positive integer, got ${props.quota.limit}`);
  }
  if (corsOrigins.includes("*") && corsOrigins.length > 1) {
    throw new Error("corsOrigins: '*' allows every origin and cannot be combined with others");
  }
  for (const origin of corsOrigins) {
    if (origin !== "*" && !ORIGIN.test(origin)) {
      throw new Error(`corsOrigins: '${origin}' is not an origin (scheme://host[:port], no path)`);
    }
  }
  if (props.stageName !== undefined && !/^[A-Za-z0-9_]{1,128}$/.test(props.stageName)) {
    throw new Error(`stageName must be letters, digits and underscores, got '${props.stageName}'`);
  }
}
