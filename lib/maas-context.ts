import { Duration, type StackProps } from "aws-cdk-lib";
import { Period } from "aws-cdk-lib/aws-apigateway";
import { Architecture } from "aws-cdk-lib/aws-lambda";
import type { Node } from "constructs";
import * as z from "zod";
import { DEFAULT_QUOTA_PERIOD, DEFAULT_THROTTLE } from "./inference-api.ts";
import type { MaasServiceStackProps } from "./service-stack.ts";
import type { MaasStatefulStackProps } from "./stateful-stack.ts";

/** A list from cdk.json (JSON array) or the command line (`-c key=a,b` or `-c 'key=["a","b"]'`). */
const stringList = z.preprocess((value) => {
  if (typeof value !== "string") return value;
  const text = value.trim();
  if (text.startsWith("[")) {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return value;
    }
  }
  return text
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item.length > 0);
}, z.array(z.string()));

const number = z.coerce.number();
const flag = z.union([z.boolean(), z.enum(["true", "false"]).transform((text) => text === "true")]);

const SAGEMAKER_KEYS = [
  "sagemakerInstanceType",
  "sagemakerInstanceCount",
  "sagemakerMinInstanceCount",
  "sagemakerMaxInstanceCount",
] as const;

/** Every context key the app reads; ranges and combinations are checked by the constructs. */
export const maasContextSchema = z
  .object({
    architecture: z.enum(["arm64", "x86_64"]).default("arm64"),
    inferenceMemoryMb: number.optional(),
    ephemeralStorageMb: number.optional(),
    lambdaMaxModelBytes: number.optional(),
    maxModelBytes: number.optional(),
    provisionedConcurrency: number.optional(),
    preloadModels: stringList.optional(),
    corsOrigins: stringList.optional(),
    throttleRateLimit: number.optional(),
    throttleBurstLimit: number.optional(),
    quotaLimit: number.optional(),
    quotaPeriod: z.enum(["DAY", "WEEK", "MONTH"]).optional(),
    alarmEmail: z.string().optional(),
    /** p99 request latency of the inference function (ms) above which its alarm fires. */
    requestLatencyAlarmMs: number.optional(),
    /** Share of API requests answered 5xx (percent) above which its alarm fires. */
    apiErrorRateAlarmPercent: number.optional(),
    /** Days asynchronous inference keeps jobs, their inputs and results. */
    asyncRetentionDays: number.optional(),
    /** Days captured requests and responses (`capture/`) are kept. */
    captureRetentionDays: number.optional(),
    jobsMemoryMb: number.optional(),
    jobsMaxConcurrency: number.optional(),
    apiGatewayCloudWatchRole: flag.optional(),
    /** The web console at <api>/console/ (static files from the bucket; every call it makes is authorized). */
    console: flag.default(true),
    /** Off by default: a SageMaker endpoint bills per instance-hour even when idle. */
    sagemaker: flag.default(false),
    sagemakerInstanceType: z.string().optional(),
    sagemakerInstanceCount: number.optional(),
    sagemakerMinInstanceCount: number.optional(),
    sagemakerMaxInstanceCount: number.optional(),
  })
  .superRefine((context, issues) => {
    if (context.sagemaker) return;
    for (const key of SAGEMAKER_KEYS) {
      if (context[key] !== undefined) {
        issues.addIssue({ code: "custom", path: [key], message: "needs sagemaker=true" });
      }
    }
  });

export type MaasContext = z.infer<typeof maasContextSchema>;
export const MAAS_CONTEXT_KEYS = Object.keys(maasContextSchema.shape) as (keyof MaasContext)[];

/** Reads and type-checks the app's context (cdk.json or `-c key=value`); a bad value fails the synth. */
export function readMaasContext(node: Node): MaasContext {
  const raw = Object.fromEntries(MAAS_CONTEXT_KEYS.map((key) => [key, node.tryGetContext(key)]));
  const result = maasContextSchema.safeParse(raw);
  if (!result.success) {
    const details = result.error.issues
      .map((issue) => `${issue.path.join(".")}: ${issue.message}`)
      .join("; ");
    throw new Error(`invalid context: ${details}`);
  }
  return result.data;
}

/** The stateful stack's settings from context; what context leaves out keeps the constructs' defaults. */
export function statefulSettings(context: MaasContext): Omit<MaasStatefulStackProps, keyof StackProps> {
  return {
    modelBucket: {
      jobRetentionDays: context.asyncRetentionDays,
      captureRetentionDays: context.captureRetentionDays,
    },
  };
}

/** The service stack's settings from context; what context leaves out keeps the stack's defaults. */
export function serviceSettings(
  context: MaasContext,
): Omit<MaasServiceStackProps, "models" | "registry" | "queues" | "jobs"> {
  const throttle =
    context.throttleRateLimit !== undefined || context.throttleBurstLimit !== undefined
      ? {
          rateLimit: context.throttleRateLimit ?? DEFAULT_THROTTLE.rateLimit,
          burstLimit: context.throttleBurstLimit ?? DEFAULT_THROTTLE.burstLimit,
        }
      : undefined;
  return {
    architecture: context.architecture === "x86_64" ? Architecture.X86_64 : Architecture.ARM_64,
    inferenceMemoryMb: context.inferenceMemoryMb,
    ephemeralStorageMb: context.ephemeralStorageMb,
    lambdaMaxModelBytes: context.lambdaMaxModelBytes,
    maxModelBytes: context.maxModelBytes,
    provisionedConcurrency: context.provisionedConcurrency,
    preloadModels: context.preloadModels,
    corsOrigins: context.corsOrigins,
    console: context.console,
    throttle,
    quota:
      context.quotaLimit !== undefined
        ? {
            limit: context.quotaLimit,
            period: context.quotaPeriod === undefined ? DEFAULT_QUOTA_PERIOD : Period[context.quotaPeriod],
          }
        : undefined,
    alarmEmail: context.alarmEmail,
    requestLatencyThreshold:
      context.requestLatencyAlarmMs === undefined
        ? undefined
        : Duration.millis(context.requestLatencyAlarmMs),
    apiErrorRateThreshold: context.apiErrorRateAlarmPercent,
    jobsMemoryMb: context.jobsMemoryMb,
    jobsMaxConcurrency: context.jobsMaxConcurrency,
    apiGatewayCloudWatchRole: context.apiGatewayCloudWatchRole,
    sagemaker: context.sagemaker
      ? {
          instanceType: context.sagemakerInstanceType,
          initialInstanceCount: context.sagemakerInstanceCount,
          minInstanceCount: context.sagemakerMinInstanceCount,
          maxInstanceCount: context.sagemakerMaxInstanceCount,
        }
      : undefined,
  };
}
