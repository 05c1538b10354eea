import type { App, Environment } from "aws-cdk-lib";
import { type MaasContext, serviceSettings, statefulSettings } from "./maas-context.ts";
import { MaasServiceStack } from "./service-stack.ts";
import { MaasStatefulStack } from "./stateful-stack.ts";

export interface MaasStacks {
  readonly stateful: MaasStatefulStack;
  readonly service: MaasServiceStack;
}

/** The whole service as two stacks, split by lifecycle: state (deploy once) and service (redeploy freely). */
export function defineMaas(app: App, context: MaasContext, env?: Environment): MaasStacks {
  const stateful = new MaasStatefulStack(app, "MaasStateful", {
    env,
    description: "serverless-maas state: model bucket, registry table, publish queues, jobs table",
    ...statefulSettings(context),
  });
  const service = new MaasServiceStack(app, "MaasService", {
    env,
    description:
      "serverless-maas service: REST API, inference/admin/register/optimize/jobs functions, alarms, dashboard",
    models: stateful.models,
    registry: stateful.registry,
    queues: stateful.queues,
    jobs: stateful.jobs,
    ...serviceSettings(context),
  });
  return { stateful, service };
}
