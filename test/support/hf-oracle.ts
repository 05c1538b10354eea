import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The bert-base-uncased tokenizer the tests publish (models/fixtures/bert-uncased/README.md). */
export const BERT_FIXTURE = fileURLToPath(new URL("../../models/fixtures/bert-uncased/", import.meta.url));

/**
 * A model folder as @huggingface/transformers reads one offline, the reference the text task tests
 * compare with: config.json, the tokenizer files and onnx/model.onnx.
 */
export function writeOracleModel(root: string, name: string, model: Uint8Array, config: object): string {
  const dir = join(root, name);
  mkdirSync(join(dir, "onnx"), { recursive: true });
  writeFileSync(join(dir, "onnx", "model.onnx"), model);
  writeFileSync(join(dir, "config.json"), JSON.stringify(config));
  for (const file of ["tokenizer.json", "tokenizer_config.json"])
    copyFileSync(join(BERT_FIXTURE, file), join(dir, file));
  return dir;
}
