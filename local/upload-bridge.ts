import { HeadObjectCommand, ListObjectsV2Command, type S3Client } from "@aws-sdk/client-s3";
import { SendMessageCommand, type SQSClient } from "@aws-sdk/client-sqs";
import type { FauxqsServer } from "fauxqs";
import { bareEtag } from "#aws/s3/upload-store.ts";
import { parseUploadKey } from "#core/registry/manifest.ts";
import type { ModelRegistry } from "#core/registry/registry.ts";

/**
 * Stands in for the bucket's event notifications, which fauxqs lacks: every upload under `models/`
 * ending in `model.onnx` or `maas.json` (the CDK stack's filters) becomes the S3 event record AWS
 * would put on the register queue. At start, uploads the registry does not know yet (made while the
 * stack was down) are notified once more, so nothing published is lost.
 */
export interface UploadBridgeOptions {
  readonly fauxqs: FauxqsServer;
  readonly s3: S3Client;
  readonly sqs: SQSClient;
  readonly bucket: string;
  readonly queueUrl: string;
  readonly region: string;
  readonly onError: (error: unknown) => void;
}

export interface UploadBridge {
  /** Notifies uploads under `models/` that have no registry record, or one still registering. */
  reconcile(registry: ModelRegistry): Promise<number>;
  /** Resolves once every notification started so far is on the queue. */
  drain(): Promise<void>;
  stop(): Promise<void>;
}

function isWatchedKey(key: string): boolean {
  return key.startsWith("models/") && (key.endsWith("/model.onnx") || key.endsWith("/maas.json"));
}

/** Uploads and copies both create objects; S3 notifies ObjectCreated for each. */
const isCreation = (status: string) => status === "uploaded" || status === "copied";

/** S3 URL-encodes keys in event records, with '+' for spaces. */
const encodeKey = (key: string) => encodeURIComponent(key).replaceAll("%2F", "/").replaceAll("%20", "+");

export function startUploadBridge(options: UploadBridgeOptions): UploadBridge {
  const { fauxqs, s3, sqs, bucket, queueUrl, region } = options;
  const pending = new Set<Promise<void>>();
  let stopped = false;
  let sequence = 0;

  async function notify(key: string): Promise<void> {
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key })).catch(() => undefined);
    if (head === undefined) return; // deleted again before we looked: S3 would have sent both events
    sequence += 1;
    const record = {
      eventVersion: "2.1",
      eventSource: "aws:s3",
      awsRegion: region,
      eventTime: new Date().toISOString(),
      eventName: "ObjectCreated:Put",
      userIdentity: { principalId: "local" },
      requestParameters: { sourceIPAddress: "127.0.0.1" },
      responseElements: { "x-amz-request-id": "local", "x-amz-id-2": "local" },
      s3: {
        s3SchemaVersion: "1.0",
        configurationId: "maas-model-uploads",
        bucket: { name: bucket, ownerIdentity: { principalId: "local" }, arn: `arn:aws:s3:::${bucket}` },
        object: {
          key: encodeKey(key),
          size: head.ContentLength ?? 0,
          eTag: bareEtag(head.ETag),
          sequencer: sequence.toString(16).padStart(16, "0").toUpperCase(),
        },
      },
    };
    await sqs.send(
      new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: JSON.stringify({ Records: [record] }) }),
    );
  }

  function forward(key: string): void {
    const work = notify(key)
      .catch(options.onError)
      .finally(() => pending.delete(work));
    pending.add(work);
  }

  // The spy runs this predicate on every event as it is recorded; answering false keeps it listening.
  fauxqs.spy
    .waitForMessage((message) => {
      if (stopped || message.service !== "s3" || message.bucket !== bucket) return false;
      if (isCreation(message.status) && isWatchedKey(message.key)) forward(message.key);
      return false;
    })
    .catch(() => undefined); // rejected when the spy is cleared or the server stops

  return {
    async reconcile(registry) {
      let notified = 0;
      let token: string | undefined;
      do {
        const page = await s3.send(
          new ListObjectsV2Command({ Bucket: bucket, Prefix: "models/", ContinuationToken: token }),
        );
        for (const object of page.Contents ?? []) {
          const key = object.Key ?? "";
          if (!key.endsWith("/model.onnx")) continue;
          let upload: ReturnType<typeof parseUploadKey>;
          try {
            upload = parseUploadKey(key);
          } catch {
            continue;
          }
          const record = await registry.getVersion(upload.name, upload.version);
          if (record === undefined || record.status === "registering") {
            forward(key);
            notified += 1;
          }
        }
        token = page.NextContinuationToken;
      } while (token !== undefined);
      return notified;
    },
    async drain() {
      while (pending.size > 0) await Promise.all([...pending]);
    },
    async stop() {
      stopped = true;
      await this.drain();
    },
  };
}
