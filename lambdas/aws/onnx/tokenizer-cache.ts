import { readFile } from "node:fs/promises";
import { LRUCache } from "lru-cache";
import type { ArtifactRef } from "#core/model.ts";
import type { TextTokenizer } from "#core/tasks/task.ts";
import type { TokenizerSource } from "#core/tasks/text-task.ts";
import { loadTextTokenizer } from "#core/tasks/tokenizer.ts";
import type { ArtifactCache } from "./artifact-cache.ts";

/**
 * Text task versions' tokenizers: the `tokenizer.json` artifact through the artifact cache (verified by
 * its sha256), built once per sha256 (building a 30 000-word vocabulary takes tens of milliseconds) and
 * kept for the versions that share it. A failed load is not remembered.
 */
export class CachedTokenizers implements TokenizerSource {
  readonly #artifacts: ArtifactCache;
  readonly #tokenizers: LRUCache<string, Promise<TextTokenizer>>;

  constructor(artifacts: ArtifactCache, maxTokenizers = 16) {
    this.#artifacts = artifacts;
    this.#tokenizers = new LRUCache({ max: maxTokenizers });
  }

  tokenizer(ref: ArtifactRef): Promise<TextTokenizer> {
    const cached = this.#tokenizers.get(ref.sha256);
    if (cached !== undefined) return cached;
    const loading = this.#load(ref);
    this.#tokenizers.set(ref.sha256, loading);
    loading.catch(() => this.#tokenizers.delete(ref.sha256));
    return loading;
  }

  async #load(ref: ArtifactRef): Promise<TextTokenizer> {
    const local = await this.#artifacts.load(ref);
    const text =
      typeof local === "string" ? await readFile(local, "utf8") : Buffer.from(local).toString("utf8");
    return loadTextTokenizer(text);
  }
}
