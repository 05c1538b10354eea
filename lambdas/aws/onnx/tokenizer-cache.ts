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
  readonly #tokenizers: LRUCache<string, TextTokenizer, ArtifactRef>;

  constructor(artifacts: ArtifactCache, maxTokenizers = 16) {
    // lru-cache shares one load among concurrent callers and keeps no failed one.
    this.#tokenizers = new LRUCache({
      max: maxTokenizers,
      fetchMethod: async (_sha256, _stale, { context: ref }) => {
        const local = await artifacts.load(ref);
        const text =
          typeof local === "string" ? await readFile(local, "utf8") : Buffer.from(local).toString("utf8");
        return loadTextTokenizer(text);
      },
    });
  }

  async tokenizer(ref: ArtifactRef): Promise<TextTokenizer> {
    return (await this.#tokenizers.fetch(ref.sha256, { context: ref })) as TextTokenizer;
  }
}
