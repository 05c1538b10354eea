import type { ModelVersion } from "#core/model.ts";
import {
  type AliasRecord,
  type ModelEntries,
  type ModelRegistry,
  type ModelSummary,
  modelVersionSchema,
} from "#core/registry/registry.ts";
import {
  ALIAS_PREFIX,
  aliasSortKey,
  MODEL_HEAD_INDEX_VALUE,
  REGISTRY_KEYS,
  VERSION_PREFIX,
  versionSortKey,
} from "./table.ts";

/** An item as the DocumentClient returns it: numbers as numbers, sets as Set. */
export type RegistryItem = Record<string, unknown>;

/** Where the next page of a query starts; each table hands back its own. */
export type PageCursor = Readonly<Record<string, unknown>>;

export interface RegistryQuery {
  /** The "models" index, or the table itself when absent. */
  readonly indexName?: string;
  readonly keyCondition: string;
  readonly values: Readonly<Record<string, string>>;
  readonly limit?: number;
  readonly start?: PageCursor;
}

export interface RegistryPage {
  readonly items: RegistryItem[];
  readonly next?: PageCursor;
}

/**
 * The two DynamoDB reads the registry needs. The SDK's DocumentClient implements it for the functions
 * that also write; a signed-HTTP one for the inference function, which only reads.
 */
export interface RegistryTable {
  get(
    key: { readonly pk: string; readonly sk: string },
    consistent: boolean,
  ): Promise<RegistryItem | undefined>;
  query(query: RegistryQuery): Promise<RegistryPage>;
}

export interface RegistryReaderOptions {
  /** Items per query page (DynamoDB's Limit); unset, a page holds up to 1 MB. */
  readonly pageSize?: number;
}

/** Read side of the registry over any RegistryTable; see registry-table.ts for the item layout. */
export class RegistryReader implements ModelRegistry {
  readonly #table: RegistryTable;
  readonly #pageSize: number | undefined;

  constructor(table: RegistryTable, options: RegistryReaderOptions = {}) {
    this.#table = table;
    this.#pageSize = options.pageSize;
  }

  getVersion(name: string, version: number): Promise<ModelVersion | undefined> {
    return this.#readVersion(name, version, false);
  }

  getVersionConsistent(name: string, version: number): Promise<ModelVersion | undefined> {
    return this.#readVersion(name, version, true);
  }

  async #readVersion(name: string, version: number, consistent: boolean) {
    const item = await this.#table.get({ pk: name, sk: versionSortKey(version) }, consistent);
    return item === undefined ? undefined : toVersion(item);
  }

  async getAlias(name: string, alias: string): Promise<number | undefined> {
    return (await this.getAliasRecord(name, alias))?.version;
  }

  async getAliasRecord(name: string, alias: string): Promise<AliasRecord | undefined> {
    const item = await this.#table.get({ pk: name, sk: aliasSortKey(alias) }, false);
    return item === undefined ? undefined : toAlias(item);
  }

  async listVersions(name: string): Promise<ModelVersion[]> {
    return (await this.#queryPrefix(name, VERSION_PREFIX)).map(toVersion);
  }

  async listAliases(name: string): Promise<AliasRecord[]> {
    return (await this.#queryPrefix(name, ALIAS_PREFIX)).map(toAlias);
  }

  /** The whole partition in one query: its few aliases and the head ride along with the versions. */
  async getModel(name: string): Promise<ModelEntries> {
    const items = await this.#queryAll({ keyCondition: "pk = :name", values: { ":name": name } });
    const versions: ModelVersion[] = [];
    const aliases = new Map<string, number>();
    for (const item of items) {
      const sortKey = String(item.sk);
      if (sortKey.startsWith(VERSION_PREFIX)) versions.push(toVersion(item));
      else if (sortKey.startsWith(ALIAS_PREFIX)) {
        const alias = toAlias(item);
        aliases.set(alias.alias, alias.version);
      }
    }
    return { versions, aliases };
  }

  #queryPrefix(name: string, prefix: string): Promise<RegistryItem[]> {
    return this.#queryAll({
      keyCondition: "pk = :name AND begins_with(sk, :prefix)",
      values: { ":name": name, ":prefix": prefix },
    });
  }

  async listModels(): Promise<ModelSummary[]> {
    const heads = await this.#queryAll({
      indexName: REGISTRY_KEYS.modelsIndex,
      keyCondition: "gsi1pk = :head",
      values: { ":head": MODEL_HEAD_INDEX_VALUE },
    });
    const models: ModelSummary[] = [];
    for (const item of heads) {
      const versions = item.versions instanceof Set ? [...(item.versions as Set<number>)] : [];
      if (versions.length === 0) continue; // every version deleted: the model is gone
      models.push({ name: String(item.pk), versions: versions.map(Number).sort((a, b) => a - b) });
    }
    return models;
  }

  async #queryAll(query: Omit<RegistryQuery, "limit" | "start">): Promise<RegistryItem[]> {
    const items: RegistryItem[] = [];
    let start: PageCursor | undefined;
    do {
      const page = await this.#table.query({
        ...query,
        ...(this.#pageSize === undefined ? {} : { limit: this.#pageSize }),
        ...(start === undefined ? {} : { start }),
      });
      items.push(...page.items);
      start = page.next;
    } while (start !== undefined);
    return items;
  }
}

function toVersion(item: RegistryItem): ModelVersion {
  const { pk: _pk, sk: _sk, ...record } = item;
  return modelVersionSchema.parse(record);
}

export function toAlias(item: RegistryItem): AliasRecord {
  return {
    alias: String(item.alias),
    version: Number(item.version),
    updatedAt: String(item.updatedAt ?? ""),
    ...(typeof item.previous === "number" ? { previous: item.previous } : {}),
  };
}
