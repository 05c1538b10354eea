import { CfnResource, Stack, Validations } from "aws-cdk-lib";
import type { IGrantable } from "aws-cdk-lib/aws-iam";
import { AwsSolutionsChecks, type NagPack, ServerlessChecks } from "cdk-nag";
import { flattenCfnReference } from "cdk-nag/lib/utils/flatten-cfn-reference.js";
import { Construct, type IConstruct } from "constructs";

/**
 * The rule packs every synthesis and the tests run. cdk-nag v3: packs are policy-validation plugins
 * (`Validations.of(app).addPlugins`), findings are acknowledged per construct with
 * `Validations.of(resource).acknowledge({ id, reason })`.
 */
export function nagPacks(scope?: IConstruct): NagPack[] {
  return [new AwsSolutionsChecks(scope, { verbose: true }), new ServerlessChecks(scope, { verbose: true })];
}

/** Acknowledges one rule on the CloudFormation resource behind `construct`. */
export function acknowledge(construct: IConstruct, id: string, reason: string): void {
  Validations.of(construct.node.defaultChild ?? construct).acknowledge({ id, reason });
}

/**
 * Acknowledges one rule on a child CDK creates only in some configurations (a role's DefaultPolicy,
 * a RestApi's CloudWatchRole, a handler's Role), if `parent` has it.
 */
export function acknowledgeChild(parent: IConstruct, childId: string, id: string, reason: string): void {
  const child = parent.node.tryFindChild(childId);
  if (child !== undefined) acknowledge(child, id, reason);
}

/**
 * Acknowledges AwsSolutions-IAM5 for one wildcard resource ARN granted to `grantee`, on its role's policy.
 * The finding names the ARN as rendered in the policy's stack, which for a cross-stack reference is
 * known only once references are resolved: the acknowledgment is added then (construct validation
 * runs after reference resolution and before the rule packs).
 */
export function acknowledgeGrantWildcard(grantee: IGrantable, resourceArn: string, reason: string): void {
  const principal = grantee.grantPrincipal;
  // Roles keep grants in their DefaultPolicy; other principals (imported roles) hold nothing to check.
  const policy = Construct.isConstruct(principal) ? principal.node.tryFindChild("DefaultPolicy") : undefined;
  const resource = policy?.node.defaultChild;
  if (resource !== undefined && CfnResource.isCfnResource(resource)) {
    resource.node.addValidation({
      validate: () => {
        const id = `AwsSolutions-IAM5[Resource::${flattenCfnReference(Stack.of(resource).resolve(resourceArn))}]`;
        if (!acknowledgedRules(resource).some((rule) => rule.id === id)) {
          Validations.of(resource).acknowledge({ id, reason });
        }
        return [];
      },
    });
  }
}

export interface AcknowledgedRule {
  readonly path: string;
  readonly id: string;
  readonly reason: string;
}

/** The rules acknowledged on `construct` itself (not its ancestors), as cdk-nag reads them. */
export function acknowledgedRules(construct: IConstruct): AcknowledgedRule[] {
  return construct.node.metadata
    .filter((entry) => entry.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY)
    .flatMap((entry) => Object.entries(entry.data as Record<string, string>))
    .map(([qualifiedId, reason]) => ({
      path: construct.node.path,
      // aws-cdk-lib records plain ids under its annotation namespace.
      id: qualifiedId.replace(/^annotation::/i, ""),
      reason,
    }));
}
