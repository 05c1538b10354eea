import type { Template } from "aws-cdk-lib/assertions";

export interface PolicyStatement {
  readonly Effect: string;
  readonly Action: string | string[];
  readonly Resource: unknown;
}

export interface TemplateResource {
  readonly Type: string;
  readonly Properties: Record<string, unknown> & {
    PolicyDocument?: { Statement: PolicyStatement[] };
    Roles?: { Ref: string }[];
  };
  readonly Metadata?: Record<string, unknown>;
}

/** A CloudFormation value as a readable string: `<Output>` for cross-stack outputs, `<Id.Attr>`, `<Id>`. */
export function render(value: unknown): string {
  if (typeof value === "string") return value;
  if (value && typeof value === "object") {
    const node = value as Record<string, unknown>;
    if ("Fn::Join" in node) {
      const [delimiter, parts] = node["Fn::Join"] as [string, unknown[]];
      return parts.map(render).join(delimiter);
    }
    if ("Fn::GetStackOutput" in node)
      return `<${(node["Fn::GetStackOutput"] as { OutputName: string }).OutputName}>`;
    if ("Fn::GetAtt" in node) return `<${(node["Fn::GetAtt"] as string[]).join(".")}>`;
    if ("Ref" in node) return `<${node.Ref as string}>`;
  }
  return JSON.stringify(value);
}

export const asArray = <T>(value: T | T[]): T[] => (Array.isArray(value) ? value : [value]);

/** `action resource` pairs granted to a role through the stack's policies, sorted. */
export function permissionsOf(template: Template, roleLogicalId: string): string[] {
  const policies = Object.values(template.findResources("AWS::IAM::Policy")) as TemplateResource[];
  return policies
    .filter((policy) => policy.Properties.Roles?.some((role) => role.Ref === roleLogicalId))
    .flatMap((policy) => policy.Properties.PolicyDocument?.Statement ?? [])
    .flatMap((statement) =>
      asArray(statement.Action).flatMap((action) =>
        asArray(statement.Resource).map((resource) => `${action} ${render(resource)}`),
      ),
    )
    .sort();
}

/** The construct path recorded on a resource (`aws:cdk:path`). */
export function cdkPath(resource: TemplateResource): string {
  return String(resource.Metadata?.["aws:cdk:path"] ?? "");
}
