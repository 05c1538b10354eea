import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { DockerImage, RemovalPolicy, Stack } from "aws-cdk-lib";
import { AwsIntegration, type RestApi } from "aws-cdk-lib/aws-apigateway";
import { type IGrantable, PolicyStatement, Role, ServicePrincipal } from "aws-cdk-lib/aws-iam";
import { LogGroup, RetentionDays } from "aws-cdk-lib/aws-logs";
import { BlockPublicAccess, Bucket, BucketEncryption, type IBucket } from "aws-cdk-lib/aws-s3";
import { BucketDeployment, CacheControl, Source } from "aws-cdk-lib/aws-s3-deployment";
import { Construct } from "constructs";
import { CONSOLE_HEADERS, consoleCsp } from "../console/headers.ts";
import { acknowledge, acknowledgeChild, acknowledgeGrantWildcard } from "./nag.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** Headers API Gateway adds to every console file as static values (none holds a quote). */
const STATIC_HEADERS = CONSOLE_HEADERS;

/** Headers S3 stores with each file and API Gateway passes on: API Gateway's static values cannot quote the CSP's `'self'`. */
const STORED_HEADERS = {
  "Content-Type": "integration.response.header.Content-Type",
  "Cache-Control": "integration.response.header.Cache-Control",
  "Content-Security-Policy": "integration.response.header.x-amz-meta-csp",
} as const;

export interface MaasConsoleProps {
  /** The API the console is served under (`/console/`), the same origin as the API it calls. */
  readonly api: RestApi;
  /** The bucket the console's publish uploads to through presigned URLs: its origin joins connect-src. */
  readonly uploadBucket?: IBucket;
}

/**
 * The web console in AWS (issue 20): built by the project's own build (console/build.ts, esbuild) at
 * synthesis, copied to the bucket under `console/`, and served by API Gateway straight from S3 at
 * `<api>/console/`, so the page and the API share an origin (no CORS). The files are public, as a
 * sign-in page's are: they hold no data, and every call they make is authorized on its own (admin
 * calls signed with the operator's temporary AWS credentials, SigV4, as the admin API requires;
 * inference calls with an API key). `config.json` tells the page to sign.
 */
export class MaasConsole extends Construct {
  public readonly bucket: Bucket;
  public readonly deployment: BucketDeployment;

  constructor(scope: Construct, id: string, props: MaasConsoleProps) {
    super(scope, id);
    const prefix = "console/";
    // A bucket of its own: the deployment's handler may write and delete there, and nowhere else.
    this.bucket = new Bucket(this, "Bucket", {
      blockPublicAccess: BlockPublicAccess.BLOCK_ALL,
      encryption: BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      // Build output, put back by every deploy: the deployment empties it when the stack goes.
      removalPolicy: RemovalPolicy.DESTROY,
    });
    acknowledge(
      this.bucket,
      "AwsSolutions-S1",
      "The console's build output, rewritten by every deploy; it is read only through API Gateway, whose access log records each request.",
    );
    this.deployment = new BucketDeployment(this, "Files", {
      sources: [
        Source.asset(join(ROOT, "console"), {
          bundling: {
            // Never pulled: the local build below always answers.
            image: DockerImage.fromRegistry("public.ecr.aws/docker/library/node:22-slim"),
            local: {
              tryBundle(outputDir: string) {
                execFileSync(
                  process.execPath,
                  [
                    "--import",
                    "tsx",
                    "--input-type=module",
                    "-e",
                    `const { buildConsole } = await import(${JSON.stringify(join(ROOT, "console", "build.ts"))}); await buildConsole(${JSON.stringify(outputDir)});`,
                  ],
                  { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"] },
                );
                return true;
              },
            },
          },
        }),
        Source.jsonData("config.json", { auth: "sigv4", region: Stack.of(this).region }),
      ],
      destinationBucket: this.bucket,
      destinationKeyPrefix: prefix,
      // Old hashed bundles go; the files go with the stack.
      prune: true,
      retainOnDelete: false,
      memoryLimit: 256,
      logGroup: new LogGroup(this, "DeploymentLogs", { retention: RetentionDays.ONE_MONTH }),
      // Revalidated on each load: index.html must never point at bundles a newer deploy pruned.
      cacheControl: [CacheControl.noCache()],
      // Presigned upload URLs are absolute in AWS: the bucket's origin joins connect-src.
      metadata: {
        csp: consoleCsp(
          props.uploadBucket === undefined ? [] : [`https://${props.uploadBucket.bucketRegionalDomainName}`],
        ),
      },
    });
    acknowledgeDeploymentHandler(this, this.bucket);

    const role = new Role(this, "ReadRole", { assumedBy: new ServicePrincipal("apigateway.amazonaws.com") });
    const files = this.bucket.arnForObjects(`${prefix}*`);
    role.addToPolicy(new PolicyStatement({ actions: ["s3:GetObject"], resources: [files] }));
    acknowledgeGrantWildcard(
      role,
      files,
      "API Gateway reads any of the console's files, and only those: their names are content-hashed.",
    );
    const integration = (key: string, proxied: boolean) =>
      new AwsIntegration({
        service: "s3",
        integrationHttpMethod: "GET",
        path: `${this.bucket.bucketName}/${prefix}${key}`,
        options: {
          credentialsRole: role,
          requestParameters: proxied ? { "integration.request.path.proxy": "method.request.path.proxy" } : {},
          integrationResponses: [
            { statusCode: "200", responseParameters: { ...storedHeaders(), ...staticHeaders() } },
            // S3 answers 403 for a key that is not there (the role may not list the bucket).
            { statusCode: "404", selectionPattern: "4\\d\\d", responseParameters: staticHeaders() },
          ],
        },
      });
    const methodResponses = [
      {
        statusCode: "200",
        responseParameters: headerNames([...Object.keys(STORED_HEADERS), ...Object.keys(STATIC_HEADERS)]),
      },
      { statusCode: "404", responseParameters: headerNames(Object.keys(STATIC_HEADERS)) },
    ];
    const root = props.api.root.addResource("console");
    const methods = [
      root.addMethod("GET", integration("index.html", false), { methodResponses }),
      root.addResource("{proxy+}").addMethod("GET", integration("{proxy}", true), {
        requestParameters: { "method.request.path.proxy": true },
        methodResponses,
      }),
    ];
    for (const method of methods) consoleIsPublic(method);
  }
}

function staticHeaders(): Record<string, string> {
  return Object.fromEntries(
    Object.entries(STATIC_HEADERS).map(([name, value]) => [`method.response.header.${name}`, `'${value}'`]),
  );
}

function storedHeaders(): Record<string, string> {
  return Object.fromEntries(
    Object.entries(STORED_HEADERS).map(([name, value]) => [`method.response.header.${name}`, value]),
  );
}

function headerNames(names: readonly string[]): Record<string, boolean> {
  return Object.fromEntries(names.map((name) => [`method.response.header.${name}`, true]));
}

const PUBLIC_REASON =
  "The console's static files are public like any sign-in page: they carry no data, and every call the page makes is authorized on its own (admin calls SigV4-signed with the operator's temporary credentials, inference calls with an API key).";

function consoleIsPublic(method: Construct): void {
  for (const rule of ["AwsSolutions-APIG4", "AwsSolutions-COG4"]) acknowledge(method, rule, PUBLIC_REASON);
}

const DEPLOYMENT_HANDLER_REASON =
  "aws-cdk-lib's BucketDeployment handler, which CDK provides and versions: it runs once per deploy, copies the console's asset into the console's own bucket (its write and delete rights reach no other bucket) and is not on any request path.";

/** The findings on BucketDeployment's singleton handler, which this project does not write. */
function acknowledgeDeploymentHandler(scope: Construct, bucket: Bucket): void {
  const stack = Stack.of(scope);
  const handler = stack.node.children.find((child) =>
    child.node.id.startsWith("Custom::CDKBucketDeployment"),
  );
  if (handler === undefined) return;
  for (const rule of [
    "AwsSolutions-L1",
    "Serverless-LambdaDLQ",
    "Serverless-LambdaLatestVersion",
    "Serverless-LambdaTracing",
  ])
    acknowledge(handler, rule, DEPLOYMENT_HANDLER_REASON);
  acknowledgeChild(
    handler,
    "ServiceRole",
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
    DEPLOYMENT_HANDLER_REASON,
  );
  const policy = handler.node.tryFindChild("ServiceRole")?.node.tryFindChild("DefaultPolicy");
  if (policy === undefined) return;
  const wildcards = [
    "Action::s3:GetBucket*",
    "Action::s3:GetObject*",
    "Action::s3:List*",
    "Action::s3:Abort*",
    "Action::s3:DeleteObject*",
    // The CDK bootstrap's asset bucket, which the default synthesizer names so.
    "Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-<AWS::Region>/*",
  ];
  for (const finding of wildcards)
    acknowledge(policy, `AwsSolutions-IAM5[${finding}]`, DEPLOYMENT_HANDLER_REASON);
  acknowledgeGrantWildcard(
    handler as unknown as IGrantable,
    bucket.arnForObjects("*"),
    DEPLOYMENT_HANDLER_REASON,
  );
}
