import { crc32, deflateSync } from "node:zlib";
import sharp from "sharp";
import { describe, expect, it } from "vitest";
import { InvalidRequestError } from "#core/errors.ts";
import type { ImageSpec } from "#core/model.ts";
import {
  imageFormat,
  imagesOf,
  MAX_IMAGE_PIXELS,
  MAX_IMAGES,
  preprocessImages,
  sampleImages,
} from "#core/tasks/image.ts";
import { rejectionOf, thrownBy } from "../support/rejection.ts";

/** Scale 255, mean 0, std 1: each value is the pixel's byte over 255, so tests read colours back. */
const UNIT: ImageSpec = {
  size: [2, 3],
  resize: "stretch",
  mean: [0, 0, 0],
  std: [1, 1, 1],
  scale: 255,
  layout: "NCHW",
  channels: "RGB",
};

type Rgb = readonly [number, number, number];
const RED: Rgb = [255, 0, 0];
const GREEN: Rgb = [0, 255, 0];
const BLUE: Rgb = [0, 0, 255];
const BLACK: Rgb = [0, 0, 0];

/** A PNG of `rows` of RGB pixels. */
function png(rows: readonly (readonly Rgb[])[]): Promise<Buffer> {
  const height = rows.length;
  const width = rows[0]?.length ?? 0;
  const pixels = Buffer.from(rows.flat(2));
  return sharp(pixels, { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer();
}

/** Columns of solid colours, `width` pixels each, `height` high. */
function stripes(colours: readonly Rgb[], width: number, height: number): Rgb[][] {
  return Array.from({ length: height }, () => colours.flatMap((colour) => Array<Rgb>(width).fill(colour)));
}

/** The pixel at (y, x) of batch row `n`, back as bytes, from a unit-spec batch in either layout. */
function pixelAt(data: Float32Array, spec: ImageSpec, n: number, y: number, x: number): number[] {
  const [height, width] = spec.size;
  const plane = height * width;
  return [0, 1, 2].map((c) =>
    Math.round(
      255 *
        (data[
          spec.layout === "NCHW"
            ? n * 3 * plane + c * plane + y * width + x
            : n * 3 * plane + (y * width + x) * 3 + c
        ] as number),
    ),
  );
}

/** Every pixel of batch row `n`, [height][width] of [r, g, b] bytes. */
function pixelsOf(data: Float32Array, spec: ImageSpec, n = 0): number[][][] {
  const [height, width] = spec.size;
  return Array.from({ length: height }, (_, y) =>
    Array.from({ length: width }, (_, x) => pixelAt(data, spec, n, y, x)),
  );
}

/** A PNG whose header declares `width` x `height` pixels, followed by a few bytes of image data. */
function pngHeader(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([length, body, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8 bits per channel, RGB, deflate, no filter, no interlace
  return Buffer.concat([
    Buffer.from("89504e470d0a1a0a", "hex"),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(Buffer.alloc(64))),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

describe("preprocessImages: values and layout", () => {
  const image = () =>
    png([
      [
        [10, 20, 30],
        [40, 50, 60],
        [70, 80, 90],
      ],
      [
        [100, 110, 120],
        [130, 140, 150],
        [160, 170, 180],
      ],
    ]);

  it("lays the RGB planes out NCHW, each pixel (x / scale - mean) / std per channel", async () => {
    const spec: ImageSpec = { ...UNIT, mean: [0.5, 0.25, 0], std: [0.5, 0.25, 2] };

    const batch = await preprocessImages([await image()], spec);

    expect(batch.dims).toEqual([1, 3, 2, 3]);
    const expected = [
      [10, 40, 70, 100, 130, 160].map((red) => (red / 255 - 0.5) / 0.5),
      [20, 50, 80, 110, 140, 170].map((green) => (green / 255 - 0.25) / 0.25),
      [30, 60, 90, 120, 150, 180].map((blue) => blue / 255 / 2),
    ].flat();
    expect(batch.data).toHaveLength(expected.length);
    for (const [i, value] of expected.entries()) expect(batch.data[i]).toBeCloseTo(value, 6);
  });

  it("interleaves the channels per pixel for NHWC", async () => {
    const spec: ImageSpec = { ...UNIT, layout: "NHWC" };

    const batch = await preprocessImages([await image()], spec);

    expect(batch.dims).toEqual([1, 2, 3, 3]);
    expect(Array.from(batch.data, (value) => Math.round(value * 255))).toEqual([
      10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160, 170, 180,
    ]);
  });

  it("puts blue first for BGR, with mean and std taken in that order", async () => {
    const spec: ImageSpec = { ...UNIT, channels: "BGR", mean: [0.1, 0, 0], std: [1, 1, 0.5] };

    const batch = await preprocessImages([await image()], spec);

    const planes = [0, 1, 2].map((c) => Array.from(batch.data.subarray(c * 6, (c + 1) * 6)));
    const bytes = (values: number[]) => values.map((value) => Math.round(value * 255));
    expect(bytes(planes[0]!.map((value) => value + 0.1))).toEqual([30, 60, 90, 120, 150, 180]);
    expect(bytes(planes[1]!)).toEqual([20, 50, 80, 110, 140, 170]);
    expect(bytes(planes[2]!.map((value) => value * 0.5))).toEqual([10, 40, 70, 100, 130, 160]);
  });

  it("gives each image its own row of the batch, in request order", async () => {
    const spec: ImageSpec = { ...UNIT, size: [1, 1] };

    const batch = await preprocessImages(
      [await png([[RED]]), await png([[GREEN]]), await png([[BLUE]])],
      spec,
    );

    expect(batch.dims).toEqual([3, 3, 1, 1]);
    expect(Array.from(batch.data)).toEqual([1, 0, 0, 0, 1, 0, 0, 0, 1]);
    // Shared memory: onnxruntime's worker reads it without a copy.
    expect(batch.data.buffer).toBeInstanceOf(SharedArrayBuffer);
  });
});

describe("preprocessImages: resizing", () => {
  // Six columns, two of each colour, two rows high: 3:1.
  const wide = () => png(stripes([RED, GREEN, BLUE], 2, 2));

  it("stretches to the size, whatever the aspect, shrinking with PIL's bilinear (triangle) filter", async () => {
    // 12 x 2 to 6 x 2: each pixel weighs the 4 it covers and their neighbours 3:1, as PIL does.
    const spec: ImageSpec = { ...UNIT, size: [2, 6], resize: "stretch" };

    const batch = await preprocessImages([await png(stripes([RED, GREEN, BLUE], 4, 2))], spec);

    expect(batch.dims).toEqual([1, 3, 2, 6]);
    const row = [RED, [223, 32, 0], [32, 223, 0], [0, 223, 32], [0, 32, 223], BLUE];
    expect(pixelsOf(batch.data, spec)).toEqual([row, row]);
  });

  it("covers the size and crops the centre", async () => {
    const spec: ImageSpec = { ...UNIT, size: [2, 2], resize: "cover" };

    const batch = await preprocessImages([await wide()], spec);

    expect(pixelsOf(batch.data, spec)).toEqual(stripes([GREEN], 2, 2));
  });

  it("fits inside the size, centred, padded with black", async () => {
    const spec: ImageSpec = { ...UNIT, size: [6, 6], resize: "contain" };

    const batch = await preprocessImages([await wide()], spec);

    expect(pixelsOf(batch.data, spec)).toEqual([
      ...stripes([BLACK], 6, 2),
      ...stripes([RED, GREEN, BLUE], 2, 2),
      ...stripes([BLACK], 6, 2),
    ]);
  });

  it("turns a JPEG by its EXIF orientation first", async () => {
    // Stored 16 x 8, red left and blue right; orientation 6 shows it turned 90 degrees clockwise:
    // 8 x 16, red on top. Unturned, it would be stretched to 8 x 16 with red still on the left.
    const stored = await sharp(Buffer.from(stripes([RED, BLUE], 8, 8).flat(2)), {
      raw: { width: 16, height: 8, channels: 3 },
    })
      .jpeg({ quality: 100, chromaSubsampling: "4:4:4" })
      .withMetadata({ orientation: 6 })
      .toBuffer();
    const spec: ImageSpec = { ...UNIT, size: [16, 8] };

    const batch = await preprocessImages([stored], spec);

    const corners = [
      [0, 0, RED],
      [0, 7, RED],
      [15, 0, BLUE],
      [15, 7, BLUE],
    ] as const;
    for (const [y, x, colour] of corners) {
      const pixel = pixelAt(batch.data, spec, 0, y, x);
      for (const [c, value] of pixel.entries())
        expect(Math.abs(value - (colour[c] as number)), `(${y}, ${x})`).toBeLessThan(8);
    }
  });
});

describe("preprocessImages: what it decodes", () => {
  const spec: ImageSpec = { ...UNIT, size: [1, 2] };

  it("reads grey, RGBA and 16-bit PNGs, JPEG and WebP as the same RGB", async () => {
    const rgb = await png([[RED, [128, 128, 128]]]);
    const grey = await sharp(Buffer.from([90, 200]), { raw: { width: 2, height: 1, channels: 1 } })
      .png()
      .toBuffer();
    const rgba = await sharp(Buffer.from([255, 0, 0, 10, 128, 128, 128, 255]), {
      raw: { width: 2, height: 1, channels: 4 },
    })
      .png()
      .toBuffer();
    const sixteen = await sharp(rgb).toColourspace("rgb16").png().toBuffer();
    const webp = await sharp(rgb).webp({ lossless: true }).toBuffer();
    expect((await sharp(sixteen).metadata()).depth).toBe("ushort");

    const batch = await preprocessImages([rgb, grey, rgba, sixteen, webp], spec);

    const rows = [0, 1, 2, 3, 4].map((n) => [
      pixelAt(batch.data, spec, n, 0, 0),
      pixelAt(batch.data, spec, n, 0, 1),
    ]);
    expect(rows[0]).toEqual([RED, [128, 128, 128]]);
    expect(rows[1]).toEqual([
      [90, 90, 90],
      [200, 200, 200],
    ]);
    // The alpha channel is dropped, not blended: a nearly transparent red pixel stays red.
    expect(rows[2]).toEqual(rows[0]);
    expect(rows[3]).toEqual(rows[0]);
    expect(rows[4]).toEqual(rows[0]);
  });

  it("refuses bytes that are not a JPEG, PNG or WebP, naming the element", async () => {
    const gif = await sharp({ create: { width: 2, height: 2, channels: 3, background: "#fff" } })
      .gif()
      .toBuffer();

    const error = await rejectionOf(
      preprocessImages([await png([[RED, RED]]), gif], spec),
      InvalidRequestError,
    );

    expect(error.status).toBe(400);
    expect(error.message).toBe(
      "input 'image' element 1 is not a JPEG, PNG or WebP image (" +
        `${gif.length} bytes starting ${gif.subarray(0, 8).toString("hex")})`,
    );
  });

  it("refuses a PNG cut short", async () => {
    const whole = await png(stripes([RED, BLUE], 4, 8));

    const error = await rejectionOf(preprocessImages([whole.subarray(0, 40)], spec), InvalidRequestError);

    expect(error.message).toMatch(/^input 'image' element 0: the PNG image cannot be decoded: /);
  });

  it("refuses an image past the pixel limit from its header, before decoding it", async () => {
    // 100,000 x 100,000 pixels would be 30 GB of RGB.
    const bomb = pngHeader(100_000, 100_000);
    const before = process.memoryUsage().rss;

    const error = await rejectionOf(preprocessImages([bomb], spec), InvalidRequestError);

    expect(error.message).toBe(
      `input 'image' element 0: the PNG image has more than ${MAX_IMAGE_PIXELS} pixels`,
    );
    expect(process.memoryUsage().rss - before).toBeLessThan(256 * 1024 * 1024);
  });

  it("decodes the same crafted PNG at a small size: the refusal above is the limit's", async () => {
    const small = pngHeader(4, 4);

    const batch = await preprocessImages([small], spec);

    expect(pixelsOf(batch.data, spec)).toEqual([[BLACK, BLACK]]);
  });
});

describe("imagesOf", () => {
  const bytes = Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 1, 2, 3);
  const base64 = Buffer.from(bytes).toString("base64");

  it("reads base64 wrapped at 76 columns, as the base64 tool writes it", () => {
    const long = Uint8Array.from({ length: 200 }, (_, i) => i);
    const wrapped = Buffer.from(long)
      .toString("base64")
      .replace(/(.{76})/g, "$1\n");
    expect(wrapped).toContain("\n");
    expect(Buffer.from(imagesOf([1], "BYTES", [wrapped])[0] as Uint8Array)).toEqual(Buffer.from(long));
  });

  it("reads base64 elements, with or without a data: URL's prefix, and raw bytes as they are", () => {
    const raw = Uint8Array.of(0xff, 0xd8, 0xff);

    const images = imagesOf([3], "BYTES", [base64, `data:image/png;base64,${base64}`, raw]);

    expect(images.map((image) => Array.from(image))).toEqual([
      Array.from(bytes),
      Array.from(bytes),
      Array.from(raw),
    ]);
    expect(images[2]).toBe(raw);
  });

  it("takes the [N, 1] shape with nested rows", () => {
    const images = imagesOf([2, 1], "BYTES", [[base64], [base64]]);

    expect(images).toHaveLength(2);
  });

  it.each([
    ["a datatype other than BYTES", [1], "FP32", [base64], /must be BYTES of shape \[N\].*got FP32 \[1\]/],
    ["a shape of rank 2 past one column", [1, 2], "BYTES", [base64, base64], /got BYTES \[1, 2\]/],
    ["no images", [0], "BYTES", [], /got BYTES \[0\]/],
    ["fewer elements than its shape", [2], "BYTES", [base64], /data must hold 2 images/],
    ["an element that is a number", [1], "BYTES", [7], /element 0: expected a base64 string, got number/],
    ["an element that is null", [1], "BYTES", [null], /element 0: expected a base64 string, got null/],
    ["an element that is not base64", [1], "BYTES", ["not base64!"], /element 0: in JSON an image is base64/],
    ["an empty element", [1], "BYTES", [""], /element 0: in JSON an image is base64/],
  ])("refuses %s with a 400 naming the input", (_what, shape, datatype, data, message) => {
    const error = thrownBy(() => imagesOf(shape, datatype, data), InvalidRequestError);

    expect(error.status).toBe(400);
    expect(error.message).toMatch(/^input 'image'/);
    expect(error.message).toMatch(message);
  });

  it("refuses more than MAX_IMAGES images before reading any", () => {
    const rows = MAX_IMAGES + 1;

    const error = thrownBy(() => imagesOf([rows], "BYTES", []), InvalidRequestError);

    expect(error.message).toBe(`input 'image' has ${rows} images; at most ${MAX_IMAGES}`);
  });
});

describe("imageFormat", () => {
  it.each([
    ["jpeg", [0xff, 0xd8, 0xff, 0xe0, 0, 0x10]],
    ["png", [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]],
    ["webp", [...Buffer.from("RIFF"), 0x24, 0, 0, 0, ...Buffer.from("WEBPVP8 ")]],
  ])("knows %s by its first bytes", (format, bytes) => {
    expect(imageFormat(Uint8Array.from(bytes))).toBe(format);
  });

  it.each([
    ["a GIF", [...Buffer.from("GIF89a")]],
    ["a RIFF that is not WebP", [...Buffer.from("RIFF"), 0x24, 0, 0, 0, ...Buffer.from("WAVEfmt ")]],
    ["a cut-off JPEG signature", [0xff, 0xd8]],
    ["text", [...Buffer.from("hello")]],
    ["nothing", []],
  ])("knows no format for %s", (_what, bytes) => {
    expect(imageFormat(Uint8Array.from(bytes))).toBeUndefined();
  });
});

describe("sampleImages", () => {
  it("gives registration a PNG and a JPEG that need resizing and decode to the spec's size", async () => {
    const samples = await sampleImages();

    expect(samples.map((sample) => imageFormat(sample))).toEqual(["png", "jpeg"]);
    const batch = await preprocessImages(samples, { ...UNIT, size: [224, 224] });
    expect(batch.dims).toEqual([2, 3, 224, 224]);
  });
});
