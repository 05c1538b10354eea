import type { CreateTableCommandInput, DynamoDBClientConfig } from "@aws-sdk/client-dynamodb";
import type { S3ClientConfig } from "@aws-sdk/client-s3";
import type { SQSClientConfig } from "@aws-sdk/client-sqs";
import type { Job, JobObjects, JobQueue, JobStatus, JobStore, JobUpdate } from "#core/jobs/jobs.ts";

/**
 * Asynchronous inference's AWS side: jobs in a DynamoDB table, bodies and results in the model bucket,
 * job ids on an SQS queue. The SDK clients load on first use: the inference function's synchronous
 * path never imports them.
 */

/** The jobs table: one item per job under `id`; DynamoDB's time to live deletes it at `expires_at`. */
export const JOBS_TABLE_KEYS = { partition: "id", timeToLive: "expires_at" } as const;

export function jobsTableDefinition(tableName: string): CreateTableCommandInput {
  return {
    TableName: tableName,
    BillingMode: "PAY_PER_REQUEST",
    AttributeDefinitions: [{ AttributeName: JOBS_TABLE_KEYS.partition, AttributeType: "S" }],
    KeySchema: [{ AttributeName: JOBS_TABLE_KEYS.partition, KeyType: "HASH" }],
  };
}

/** `load()` once, on the first call: what a client costs to import is paid by the first job, not the cold start. */
function lazy<T>(load: () => Promise<T>): () => Promise<T> {
  let loaded: Promise<T> | undefined;
  return () => {
    loaded ??= load();
    return loaded;
  };
}

type DocumentSdk = typeof import("@aws-sdk/lib-dynamodb");

export class DynamoJobStore implements JobStore {
  readonly #table: string;
  readonly #sdk: () => Promise<[DocumentSdk, import("@aws-sdk/lib-dynamodb").DynamoDBDocumentClient]>;

  constructor(table: string, config: DynamoDBClientConfig) {
    this.#table = table;
    this.#sdk = lazy(async () => {
      const [{ DynamoDBClient }, documents] = await Promise.all([
        import("@aws-sdk/client-dynamodb"),
        import("@aws-sdk/lib-dynamodb"),
      ]);
      const client = documents.DynamoDBDocumentClient.from(new DynamoDBClient(config), {
        marshallOptions: { removeUndefinedValues: true },
      });
      return [documents, client];
    });
  }

  async create(job: Job): Promise<void> {
    const [{ PutCommand }, client] = await this.#sdk();
    await client.send(
      new PutCommand({
        TableName: this.#table,
        Item: job,
        ConditionExpression: "attribute_not_exists(#id)",
        ExpressionAttributeNames: { "#id": JOBS_TABLE_KEYS.partition },
      }),
    );
  }

  async get(id: string): Promise<Job | undefined> {
    const [{ GetCommand }, client] = await this.#sdk();
    const { Item } = await client.send(
      new GetCommand({ TableName: this.#table, Key: { id }, ConsistentRead: true }),
    );
    return Item as Job | undefined;
  }

  async update(id: string, from: readonly JobStatus[], update: JobUpdate): Promise<boolean> {
    const [{ UpdateCommand }, client] = await this.#sdk();
    const entries = Object.entries(update).filter(([, value]) => value !== undefined);
    const names: Record<string, string> = { "#status": "status" };
    const values: Record<string, unknown> = {};
    from.forEach((status, i) => {
      values[`:from${i}`] = status;
    });
    const sets = entries.map(([field, value], i) => {
      names[`#f${i}`] = field;
      values[`:v${i}`] = value;
      return `#f${i} = :v${i}`;
    });
    try {
      await client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { id },
          UpdateExpression: `SET ${sets.join(", ")}`,
          ConditionExpression: `#status IN (${from.map((_, i) => `:from${i}`).join(", ")})`,
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: values,
        }),
      );
      return true;
    } catch (error) {
      if ((error as { name?: string }).name === "ConditionalCheckFailedException") return false;
      throw error;
    }
  }
}

type S3Sdk = typeof import("@aws-sdk/client-s3");
type Presigner = typeof import("@aws-sdk/s3-request-presigner");

/** Results above this go up in parts, as S3 clients do (and the local emulator needs above 11 MiB). */
const PART_BYTES = 8 * 1024 * 1024;

export class S3JobObjects implements JobObjects {
  readonly #bucket: string;
  readonly #sdk: () => Promise<[S3Sdk, Presigner, import("@aws-sdk/client-s3").S3Client]>;

  constructor(bucket: string, config: S3ClientConfig) {
    this.#bucket = bucket;
    this.#sdk = lazy(async () => {
      const [sdk, presigner] = await Promise.all([
        import("@aws-sdk/client-s3"),
        import("@aws-sdk/s3-request-presigner"),
      ]);
      // Otherwise the SDK signs a CRC32 of the empty body into each presigned PUT, and S3 refuses the
      // real upload: checksums are asked for only where S3 requires them.
      return [sdk, presigner, new sdk.S3Client({ requestChecksumCalculation: "WHEN_REQUIRED", ...config })];
    });
  }

  async presignPut(key: string, expiresSeconds: number): Promise<string> {
    const [{ PutObjectCommand }, { getSignedUrl }, client] = await this.#sdk();
    return getSignedUrl(client, new PutObjectCommand({ Bucket: this.#bucket, Key: key }), {
      expiresIn: expiresSeconds,
    });
  }

  async presignMultipart(key: string, parts: number, expiresSeconds: number) {
    const [sdk, { getSignedUrl }, client] = await this.#sdk();
    const { UploadId } = await client.send(
      new sdk.CreateMultipartUploadCommand({ Bucket: this.#bucket, Key: key }),
    );
    if (UploadId === undefined) throw new Error("S3 started a multipart upload without an UploadId");
    const options = { expiresIn: expiresSeconds };
    const partUrls = await Promise.all(
      Array.from({ length: parts }, (_, i) =>
        getSignedUrl(
          client,
          new sdk.UploadPartCommand({ Bucket: this.#bucket, Key: key, UploadId, PartNumber: i + 1 }),
          options,
        ),
      ),
    );
    const completeUrl = await getSignedUrl(
      client,
      new sdk.CompleteMultipartUploadCommand({ Bucket: this.#bucket, Key: key, UploadId }),
      options,
    );
    return { uploadId: UploadId, partUrls, completeUrl };
  }

  async presignGet(key: string, expiresSeconds: number): Promise<string> {
    const [{ GetObjectCommand }, { getSignedUrl }, client] = await this.#sdk();
    return getSignedUrl(client, new GetObjectCommand({ Bucket: this.#bucket, Key: key }), {
      expiresIn: expiresSeconds,
    });
  }

  async size(key: string): Promise<number | undefined> {
    const [{ HeadObjectCommand }, , client] = await this.#sdk();
    try {
      const head = await client.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: key }));
      return head.ContentLength ?? 0;
    } catch (error) {
      // Without s3:ListBucket, which the function is not given, S3 answers a missing key's HEAD with 403.
      const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status === 404 || status === 403) return undefined;
      throw error;
    }
  }

  async get(key: string): Promise<Buffer> {
    const [{ GetObjectCommand }, , client] = await this.#sdk();
    const { Body, ContentLength } = await client.send(
      new GetObjectCommand({ Bucket: this.#bucket, Key: key }),
    );
    if (Body === undefined || ContentLength === undefined)
      throw new Error(`s3://${this.#bucket}/${key} has no body or no length`);
    // Read into shared memory: binary tensors aligned in it go to the session's worker without a copy.
    const bytes = Buffer.from(new SharedArrayBuffer(ContentLength));
    let offset = 0;
    for await (const chunk of Body as AsyncIterable<Uint8Array>) {
      if (offset + chunk.length > ContentLength)
        throw new Error(`s3://${this.#bucket}/${key} is longer than its length`);
      bytes.set(chunk, offset);
      offset += chunk.length;
    }
    if (offset !== ContentLength)
      throw new Error(`s3://${this.#bucket}/${key} ended after ${offset} of ${ContentLength} bytes`);
    return bytes;
  }

  async put(key: string, body: string | Uint8Array, contentType: string, metadata?: Record<string, string>) {
    const [, , client] = await this.#sdk();
    const { Upload } = await import("@aws-sdk/lib-storage");
    await new Upload({
      client,
      params: {
        Bucket: this.#bucket,
        Key: key,
        Body: body,
        ContentType: contentType,
        ...(metadata === undefined ? {} : { Metadata: metadata }),
      },
      partSize: PART_BYTES,
    }).done();
  }
}

export class SqsJobQueue implements JobQueue {
  readonly #queueUrl: string;
  readonly #sdk: () => Promise<
    [typeof import("@aws-sdk/client-sqs"), import("@aws-sdk/client-sqs").SQSClient]
  >;

  constructor(queueUrl: string, config: SQSClientConfig) {
    this.#queueUrl = queueUrl;
    this.#sdk = lazy(async () => {
      const sdk = await import("@aws-sdk/client-sqs");
      return [sdk, new sdk.SQSClient(config)];
    });
  }

  async send(id: string): Promise<void> {
    const [{ SendMessageCommand }, client] = await this.#sdk();
    await client.send(
      new SendMessageCommand({ QueueUrl: this.#queueUrl, MessageBody: JSON.stringify({ id }) }),
    );
  }

  /** Makes a received message visible again after `seconds`, not after the queue's whole visibility timeout. */
  async retryAfter(receiptHandle: string, seconds: number): Promise<void> {
    const [{ ChangeMessageVisibilityCommand }, client] = await this.#sdk();
    await client.send(
      new ChangeMessageVisibilityCommand({
        QueueUrl: this.#queueUrl,
        ReceiptHandle: receiptHandle,
        VisibilityTimeout: seconds,
      }),
    );
  }
}
