import { Duration } from "aws-cdk-lib";
import { Grant, type IGrantable } from "aws-cdk-lib/aws-iam";
import {
  BlockPublicAccess,
  Bucket,
  BucketEncryption,
  HttpMethods,
  ObjectOwnership,
} from "aws-cdk-lib/aws-s3";
import { Construct } from "constructs";
import { CAPTURE_PREFIX } from "#core/capture/payload-capture.ts";
import { JOB_KEYS } from "#core/jobs/jobs.ts";
import { acknowledge, acknowledgeGrantWildcard } from "./nag.ts";

/** Publishers upload under this prefix: `models/<name>/<version>/model.onnx` (and `maas.json`). */
export const MODELS_PREFIX = "models/";
/** Registration copies each accepted upload to a content-addressed key under this prefix. */
export const ARTIFACTS_PREFIX = "artifacts/";
/**
 * The SageMaker endpoint's model prefix: registration publishes `<sha256>.tar.gz` archives of
 * sagemaker-target versions here. Outside `models/`, so the archives never start a registration.
 */
export const ENDPOINT_MODELS_PREFIX = "sagemaker/models/";

export interface ModelBucketProps {
  /**
   * How long a replaced or deleted object version is kept before it expires.
   * @default Duration.days(30)
   */
  readonly noncurrentVersionExpiration?: Duration;
  /**
   * How long an unfinished multipart upload may hold storage before it is aborted.
   * @default Duration.days(7)
   */
  readonly abortIncompleteMultipartUploadAfter?: Duration;
  /**
   * How long asynchronous inference keeps a job's input and result (under `async/`); the inference
   * function is told the same number, and the job's record expires with them.
   * @default 7
   */
  readonly jobRetentionDays?: number;
  /**
   * How long captured requests and responses (under `capture/`) are kept.
   * @default 30
   */
  readonly captureRetentionDays?: number;
  /**
   * Write S3 server access logs to a bucket of their own.
   * @default true
   */
  readonly serverAccessLogs?: boolean;
  /**
   * How long server access log objects are kept.
   * @default Duration.days(90)
   */
  readonly accessLogsExpiration?: Duration;
}

/** Unfinished uploads of job inputs and results are aborted after this many days. */
const JOB_UPLOAD_ABORT_DAYS = 1;

/**
 * The bucket publishers upload models to: versioned, S3-managed encryption, TLS only, no public
 * access, with lifecycle rules for unfinished uploads, replaced versions and asynchronous inference's
 * objects, and server access logs.
 */
export class ModelBucket extends Construct {
  public readonly bucket: Bucket;
  /** Target of the model bucket's server access logs, when enabled. */
  public readonly accessLogsBucket?: Bucket;
  /** Days a job's objects (and its record) are kept. */
  public readonly jobRetentionDays: number;
  /** Days captured requests and responses are kept. */
  public readonly captureRetentionDays: number;

  constructor(scope: Construct, id: string, props: ModelBucketProps = {}) {
    super(scope, id);
    const noncurrent = props.noncurrentVersionExpiration ?? Duration.days(30);
    const abortAfter = props.abortIncompleteMultipartUploadAfter ?? Duration.days(7);
    const logsExpiration = props.accessLogsExpiration ?? Duration.days(90);
    for (const [name, value] of [
      ["noncurrentVersionExpiration", noncurrent],
      ["abortIncompleteMultipartUploadAfter", abortAfter],
      ["accessLogsExpiration", logsExpiration],
    ] as const) {
      if (!isWholeDays(value)) throw new Error(`${name} must be a whole number of days, at least 1`);
    }
    this.jobRetentionDays = props.jobRetentionDays ?? 7;
    if (!Number.isInteger(this.jobRetentionDays) || this.jobRetentionDays < 1) {
      throw new Error(
        `jobRetentionDays must be a whole number of days, at least 1, got ${this.jobRetentionDays}`,
      );
    }
    this.captureRetentionDays = props.captureRetentionDays ?? 30;
    if (!Number.isInteger(this.captureRetentionDays) || this.captureRetentionDays < 1) {
      throw new Error(
        `captureRetentionDays must be a whole number of days, at least 1, got ${this.captureRetentionDays}`,
      );
    }
    if (props.serverAccessLogs === false && props.accessLogsExpiration !== undefined) {
      throw new Error("accessLogsExpiration needs serverAccessLogs");
    }

    if (props.serverAccessLogs ?? true) {
      this.accessLogsBucket = new Bucket(this, "AccessLogs", {
        // Log delivery writes with SSE-S3 only.
        encryption: BucketEncryption.S3_MANAGED,
        blockPublicAccess: BlockPublicAccess.BLOCK_ALL,
        objectOwnership: ObjectOwnership.BUCKET_OWNER_ENFORCED,
        enforceSSL: true,
        lifecycleRules: [{ expiration: logsExpiration }],
      });
      acknowledge(
        this.accessLogsBucket,
        "AwsSolutions-S1",
        "This is the access log bucket itself; logging its own accesses would recurse.",
      );
    }

    this.bucket = new Bucket(this, "Bucket", {
      versioned: true,
      // SSE-S3: no KMS request per model download, and S3 -> SQS notifications need no key policy.
      encryption: BucketEncryption.S3_MANAGED,
      blockPublicAccess: BlockPublicAccess.BLOCK_ALL,
      objectOwnership: ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      serverAccessLogsBucket: this.accessLogsBucket,
      serverAccessLogsPrefix: this.accessLogsBucket ? "model-bucket/" : undefined,
      // Browsers upload through presigned URLs (the console's publish, asynchronous inputs): the URL's
      // signature is the authorization, so any origin may send it; ETag is what a multipart part returns.
      cors: [
        {
          allowedMethods: [HttpMethods.PUT, HttpMethods.POST],
          allowedOrigins: ["*"],
          allowedHeaders: ["content-type", "content-length"],
          exposedHeaders: ["ETag"],
          maxAge: 3600,
        },
      ],
      lifecycleRules: [
        { abortIncompleteMultipartUploadAfter: abortAfter },
        { noncurrentVersionExpiration: noncurrent },
        // Job inputs and results expire with their records; the bucket is versioned, so their expired
        // versions go a day later rather than after `noncurrentVersionExpiration`.
        {
          prefix: JOB_KEYS.prefix,
          expiration: Duration.days(this.jobRetentionDays),
          noncurrentVersionExpiration: Duration.days(1),
          abortIncompleteMultipartUploadAfter: Duration.days(JOB_UPLOAD_ABORT_DAYS),
        },
        // S3 refuses this flag in a rule that also expires current versions by age.
        { prefix: JOB_KEYS.prefix, expiredObjectDeleteMarker: true },
        // Captured payloads are the callers' data: kept for their audit window, then gone, versions too.
        {
          prefix: CAPTURE_PREFIX,
          expiration: Duration.days(this.captureRetentionDays),
          noncurrentVersionExpiration: Duration.days(1),
        },
        { prefix: CAPTURE_PREFIX, expiredObjectDeleteMarker: true },
      ],
    });
  }

  /** Read uploads and manifests (`models/*`), nothing else in the bucket. */
  public grantReadUploads(grantee: IGrantable): Grant {
    return this.grantOnPrefix(grantee, ["s3:GetObject"], MODELS_PREFIX);
  }

  /** Write uploads (`models/*`): what the console's presigned publish URLs are signed with. */
  public grantWriteUploads(grantee: IGrantable): Grant {
    return this.grantOnPrefix(grantee, ["s3:PutObject"], MODELS_PREFIX);
  }

  /** Delete uploads (`models/*`); versioning keeps the bytes until the noncurrent rule expires them. */
  public grantDeleteUploads(grantee: IGrantable): Grant {
    return this.grantOnPrefix(grantee, ["s3:DeleteObject"], MODELS_PREFIX);
  }

  /** Read serving artifacts (`artifacts/*`). */
  public grantReadArtifacts(grantee: IGrantable): Grant {
    return this.grantOnPrefix(grantee, ["s3:GetObject"], ARTIFACTS_PREFIX);
  }

  /** Write serving artifacts (`artifacts/*`), e.g. by copying an accepted upload there. */
  public grantWriteArtifacts(grantee: IGrantable): Grant {
    return this.grantOnPrefix(grantee, ["s3:PutObject"], ARTIFACTS_PREFIX);
  }

  /**
   * Upload serving artifacts (`artifacts/*`) of any size: multipart uploads need `s3:PutObject`, and
   * `s3:AbortMultipartUpload` lets a failed one clean up its parts at once.
   */
  public grantUploadArtifacts(grantee: IGrantable): Grant {
    return this.grantOnPrefix(grantee, ["s3:PutObject", "s3:AbortMultipartUpload"], ARTIFACTS_PREFIX);
  }

  /**
   * Publish model archives under the endpoint's model prefix (`sagemaker/models/*`): streamed multipart
   * uploads, and the HEAD (`s3:GetObject`) that skips an archive already there.
   */
  public grantPublishEndpointModels(grantee: IGrantable): Grant {
    return this.grantOnPrefix(
      grantee,
      ["s3:PutObject", "s3:AbortMultipartUpload", "s3:GetObject"],
      ENDPOINT_MODELS_PREFIX,
    );
  }

  /** Read and list the endpoint's model prefix (`sagemaker/models/`), nothing else: for SageMaker itself. */
  public grantReadEndpointModels(grantee: IGrantable): Grant {
    const read = this.grantOnPrefix(grantee, ["s3:GetObject"], ENDPOINT_MODELS_PREFIX);
    const list = Grant.addToPrincipal({
      grantee,
      actions: ["s3:ListBucket"],
      resourceArns: [this.bucket.bucketArn],
      conditions: { StringLike: { "s3:prefix": [`${ENDPOINT_MODELS_PREFIX}*`] } },
    });
    return read.combine(list);
  }

  /**
   * Upload job inputs (`async/inputs/*`): inline bodies, and presigned PUTs or multipart uploads
   * (CreateMultipartUpload, UploadPart and CompleteMultipartUpload are all `s3:PutObject`).
   */
  public grantWriteJobInputs(grantee: IGrantable): Grant {
    return this.grantOnPrefix(grantee, ["s3:PutObject"], JOB_KEYS.inputPrefix);
  }

  /** Read job inputs (`async/inputs/*`): the HEAD that checks an upload at submission, the worker's GET. */
  public grantReadJobInputs(grantee: IGrantable): Grant {
    return this.grantOnPrefix(grantee, ["s3:GetObject"], JOB_KEYS.inputPrefix);
  }

  /** Read job results (`async/results/*`): what the presigned GET a job's owner receives is signed with. */
  public grantReadJobResults(grantee: IGrantable): Grant {
    return this.grantOnPrefix(grantee, ["s3:GetObject"], JOB_KEYS.resultPrefix);
  }

  /**
   * Write job results (`async/results/*`) of any size: multipart uploads need `s3:PutObject`, and
   * `s3:AbortMultipartUpload` lets a failed one clean up its parts at once.
   */
  public grantWriteJobResults(grantee: IGrantable): Grant {
    return this.grantOnPrefix(grantee, ["s3:PutObject", "s3:AbortMultipartUpload"], JOB_KEYS.resultPrefix);
  }

  /** Write captured requests and responses (`capture/*`): the inference function's payload capture. */
  public grantWriteCapture(grantee: IGrantable): Grant {
    return this.grantOnPrefix(grantee, ["s3:PutObject"], CAPTURE_PREFIX);
  }

  /** Read and list captured requests and responses (`capture/`): for `maas capture` and auditors. */
  public grantReadCapture(grantee: IGrantable): Grant {
    const read = this.grantOnPrefix(grantee, ["s3:GetObject"], CAPTURE_PREFIX);
    const list = Grant.addToPrincipal({
      grantee,
      actions: ["s3:ListBucket"],
      resourceArns: [this.bucket.bucketArn],
      conditions: { StringLike: { "s3:prefix": [`${CAPTURE_PREFIX}*`] } },
    });
    return read.combine(list);
  }

  /**
   * List keys. S3 answers HeadObject/GetObject on a missing key with 404 only to principals that may
   * list the bucket (403 otherwise), and registration tells "gone" from "forbidden" by it.
   */
  public grantListKeys(grantee: IGrantable): Grant {
    return Grant.addToPrincipal({
      grantee,
      actions: ["s3:ListBucket"],
      resourceArns: [this.bucket.bucketArn],
    });
  }

  private grantOnPrefix(grantee: IGrantable, actions: string[], prefix: string): Grant {
    const objects = this.bucket.arnForObjects(`${prefix}*`);
    const grant = Grant.addToPrincipal({ grantee, actions, resourceArns: [objects] });
    acknowledgeGrantWildcard(
      grantee,
      objects,
      `Object-prefix ARN: ${actions.join(", ")} on ${prefix}* only; object names are only known at upload.`,
    );
    return grant;
  }
}

function isWholeDays(duration: Duration): boolean {
  const days = duration.toMilliseconds() / 86_400_000;
  return Number.isInteger(days) && days >= 1;
}
