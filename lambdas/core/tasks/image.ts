import { InvalidRequestError } from "#core/errors.ts";
import type { ImageSpec } from "#core/model.ts";
import { IMAGE_INPUT } from "./task.ts";

/**
 * Image pre-processing with sharp (libvips): decode, orient, resize, then the manifest's scale, mean and
 * std in the model's channel order and layout. sharp is imported on first use: only image models pay
 * for it on a cold start.
 */

/** The formats the image route decodes, by their first bytes; sharp reads more (SVG, TIFF, GIF), which are refused. */
const SIGNATURES: readonly { readonly format: string; readonly matches: (bytes: Uint8Array) => boolean }[] = [
  { format: "jpeg", matches: (b) => b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff },
  {
    format: "png",
    matches: (b) => b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47,
  },
  {
    format: "webp",
    matches: (b) => ascii(b, 0, 4) === "RIFF" && ascii(b, 8, 12) === "WEBP",
  },
];

/** Pixels one image may have before it is decoded: 40 megapixels is 120 MB of RGB, a decompression bomb past that. */
export const MAX_IMAGE_PIXELS = 40_000_000;

/** The most images in one request: each is a row of the model's batch. */
export const MAX_IMAGES = 256;

/** A batch of images as the model takes them: [N, 3, H, W] or [N, H, W, 3], float32. */
export interface ImageBatch {
  readonly dims: readonly number[];
  readonly data: Float32Array;
}

function ascii(bytes: Uint8Array, start: number, end: number): string {
  return String.fromCharCode(...bytes.subarray(start, end));
}

/** `jpeg`, `png` or `webp` by the image's first bytes; undefined for anything else. */
export function imageFormat(bytes: Uint8Array): string | undefined {
  return SIGNATURES.find((signature) => signature.matches(bytes))?.format;
}

/** Decodes and pre-processes each image into one row of the batch; a 400 names the image that cannot be. */
export async function preprocessImages(images: readonly Uint8Array[], spec: ImageSpec): Promise<ImageBatch> {
  const [height, width] = spec.size;
  const plane = height * width;
  // Shared memory: the session's worker thread reads it in place instead of a structured clone.
  const data = new Float32Array(new SharedArrayBuffer(images.length * 3 * plane * 4));
  const { default: sharp } = await import("sharp");
  await Promise.all(
    images.map(async (bytes, row) => {
      const pixels = await decodeRgb(sharp, bytes, spec, `input '${IMAGE_INPUT}' element ${row}`);
      writeRow(data, row * 3 * plane, pixels, spec);
    }),
  );
  const dims = spec.layout === "NCHW" ? [images.length, 3, height, width] : [images.length, height, width, 3];
  return { dims, data };
}

type Sharp = typeof import("sharp")["default"];

const FITS = { stretch: "fill", cover: "cover", contain: "contain" } as const;

/** RGB bytes, row-major [height, width, 3], of the image resized to the spec's size. */
async function decodeRgb(sharp: Sharp, bytes: Uint8Array, spec: ImageSpec, element: string): Promise<Buffer> {
  const format = imageFormat(bytes);
  if (format === undefined) {
    throw new InvalidRequestError(
      `${element} is not a JPEG, PNG or WebP image (${bytes.length} bytes starting ${Buffer.from(bytes.subarray(0, 8)).toString("hex") || "with nothing"})`,
    );
  }
  const [height, width] = spec.size;
  try {
    const { data, info } = await sharp(bytes, { limitInputPixels: MAX_IMAGE_PIXELS, failOn: "error" })
      // Phones store a photo sideways with an EXIF orientation: the caller means the picture as shown.
      .autoOrient()
      // Bilinear, as torchvision's and PIL's default pre-processing (the same values when shrinking).
      .resize(width, height, {
        fit: FITS[spec.resize],
        kernel: "linear",
        position: "centre",
        background: { r: 0, g: 0, b: 0 },
      })
      .toColourspace("srgb")
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3 || info.width !== width || info.height !== height)
      throw new Error(`decoded to ${info.width} x ${info.height} x ${info.channels}`);
    return data;
  } catch (error) {
    const message = (error as Error).message;
    throw new InvalidRequestError(
      /pixel limit/i.test(message)
        ? `${element}: the ${format.toUpperCase()} image has more than ${MAX_IMAGE_PIXELS} pixels`
        : `${element}: the ${format.toUpperCase()} image cannot be decoded: ${message}`,
    );
  }
}

/** One image's RGB bytes into the batch at `offset`: channel order, scale, mean and std, layout. */
function writeRow(out: Float32Array, offset: number, rgb: Buffer, spec: ImageSpec): void {
  const plane = spec.size[0] * spec.size[1];
  const { mean, std, scale } = spec;
  for (let c = 0; c < 3; c++) {
    const source = spec.channels === "BGR" ? 2 - c : c;
    const multiply = 1 / (scale * (std[c] as number));
    const add = -(mean[c] as number) / (std[c] as number);
    if (spec.layout === "NCHW") {
      const base = offset + c * plane;
      for (let p = 0; p < plane; p++) out[base + p] = (rgb[p * 3 + source] as number) * multiply + add;
    } else {
      for (let p = 0; p < plane; p++)
        out[offset + p * 3 + c] = (rgb[p * 3 + source] as number) * multiply + add;
    }
  }
}

/**
 * The images of a task request: a BYTES tensor of shape [N] or [N, 1], each element an encoded image,
 * raw through the binary data extension or base64 in JSON (a `data:` URL's prefix is allowed).
 */
export function imagesOf(shape: readonly number[], datatype: string, data: unknown): Uint8Array[] {
  const rows = shape[0] ?? 0;
  if (datatype !== "BYTES" || !(shape.length === 1 || (shape.length === 2 && shape[1] === 1)) || rows < 1) {
    throw new InvalidRequestError(
      `input '${IMAGE_INPUT}' must be BYTES of shape [N] (one encoded image per row), got ${datatype} [${shape.join(", ")}]`,
    );
  }
  if (rows > MAX_IMAGES)
    throw new InvalidRequestError(`input '${IMAGE_INPUT}' has ${rows} images; at most ${MAX_IMAGES}`);
  const elements = Array.isArray(data) ? data.flat() : undefined;
  if (elements?.length !== rows) {
    throw new InvalidRequestError(
      `input '${IMAGE_INPUT}': data must hold ${rows} images (base64 strings, or raw bytes through the binary data extension)`,
    );
  }
  return elements.map((element, row) => {
    if (element instanceof Uint8Array) return element;
    if (typeof element === "string") return base64Image(element, row);
    throw new InvalidRequestError(
      `input '${IMAGE_INPUT}' element ${row}: expected a base64 string, got ${element === null ? "null" : typeof element}`,
    );
  });
}

const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

function base64Image(text: string, row: number): Uint8Array {
  // The base64 tool wraps its output at 76 columns: line breaks are not part of the image.
  const payload = (text.startsWith("data:") ? text.slice(text.indexOf(",") + 1) : text).replace(/\s+/g, "");
  if (payload.length === 0 || !BASE64.test(payload)) {
    throw new InvalidRequestError(
      `input '${IMAGE_INPUT}' element ${row}: in JSON an image is base64 text (or send raw bytes through the binary data extension)`,
    );
  }
  return Buffer.from(payload, "base64");
}

/**
 * Two encoded images registration runs an image model's chain on: a PNG and a JPEG of a colour gradient,
 * of a size that needs resizing, so decoding, resizing and batching are all part of the check.
 */
export async function sampleImages(): Promise<Uint8Array[]> {
  const { default: sharp } = await import("sharp");
  const [width, height] = [96, 64];
  const pixels = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const at = (y * width + x) * 3;
      pixels[at] = (x * 255) / width;
      pixels[at + 1] = (y * 255) / height;
      pixels[at + 2] = ((x + y) * 255) / (width + height);
    }
  }
  const raw = { raw: { width, height, channels: 3 as const } };
  return Promise.all([sharp(pixels, raw).png().toBuffer(), sharp(pixels, raw).jpeg().toBuffer()]);
}
