/** Every model with its versions at a glance: status, target, serving variant, aliases, warnings, reasons. */
import { useEffect, useMemo, useState } from "preact/hooks";
import type { Api } from "../api.ts";
import { ErrorMessage, Loading, StatusBadge, useResource } from "../components.tsx";
import { href } from "../router.ts";
import { STATUSES, type VersionRecord } from "../schemas.ts";

interface CatalogModel {
  readonly name: string;
  readonly versions: readonly VersionRecord[];
  /** Why the model's versions could not be read, if they could not. */
  readonly error?: unknown;
}

async function loadCatalog(api: Api): Promise<CatalogModel[]> {
  const { models } = await api.models();
  return Promise.all(
    models.map((model) =>
      api.versions(model.name).then(
        ({ versions }) => ({ name: model.name, versions }),
        (error: unknown) => ({ name: model.name, versions: [], error }),
      ),
    ),
  );
}

/** Versions still moving: the list refreshes quickly until they settle. */
const inProgress = (models: readonly CatalogModel[]) =>
  models.some((model) => model.versions.some((v) => v.status === "registering" || v.status === "optimizing"));

/** A version's status, target, serving variant, aliases and notes: the cells both version tables show. */
export function VersionCells({ version }: { version: VersionRecord }) {
  return (
    <>
      <td>
        <StatusBadge status={version.status} />
      </td>
      <td>{version.target}</td>
      <td>{version.serving ?? "–"}</td>
      <td>{version.aliases.length === 0 ? "–" : version.aliases.join(", ")}</td>
      <td>
        <VersionNotes version={version} />
      </td>
    </>
  );
}

export function VersionNotes({ version }: { version: VersionRecord }) {
  const warnings = version.warnings ?? [];
  return (
    <>
      {version.status === "failed" && (
        <p class="reason">
          <strong>Failed:</strong> {version.reason ?? "no reason recorded"}
        </p>
      )}
      {version.optimizeError !== undefined && <p class="muted">Optimization: {version.optimizeError}</p>}
      {warnings.length > 0 && (
        <details class="warnings">
          <summary>
            {warnings.length} warning{warnings.length === 1 ? "" : "s"}
          </summary>
          <ul>
            {warnings.map((warning) => (
              <li key={warning}>{warning}</li>
            ))}
          </ul>
        </details>
      )}
    </>
  );
}

function matches(model: CatalogModel, version: VersionRecord, text: string, status: string): boolean {
  if (status !== "all" && version.status !== status) return false;
  if (text === "") return true;
  const haystack = [
    model.name,
    version.status,
    version.target,
    version.serving ?? "",
    version.reason ?? "",
    ...version.aliases,
    ...(version.warnings ?? []),
    version.description ?? "",
  ]
    .join(" ")
    .toLowerCase();
  return text
    .toLowerCase()
    .split(/\s+/)
    .every((word) => haystack.includes(word));
}

export function ModelsView({ api }: { api: Api }) {
  const [text, setText] = useState("");
  const [status, setStatus] = useState("all");
  const [fast, setFast] = useState(false);
  const catalog = useResource(() => loadCatalog(api), "catalog", fast ? 2000 : 15000);
  const models = catalog.data;
  useEffect(() => {
    if (models !== undefined) setFast(inProgress(models));
  }, [models]);

  const rows = useMemo(
    () =>
      (models ?? []).flatMap((model) =>
        [...model.versions]
          .reverse()
          .filter((version) => matches(model, version, text.trim(), status))
          .map((version) => ({ model, version })),
      ),
    [models, text, status],
  );

  return (
    <section aria-labelledby="models-title">
      <div class="title-row">
        <h1 id="models-title">Models</h1>
        <a class="button" href={href({ view: "publish" })}>
          Publish a model
        </a>
      </div>
      <form class="filters" aria-label="Filter the versions" onSubmit={(event) => event.preventDefault()}>
        <label>
          Filter
          <input
            type="search"
            value={text}
            placeholder="name, alias, status, warning…"
            onInput={(event) => setText(event.currentTarget.value)}
          />
        </label>
        <label>
          Status
          <select value={status} onChange={(event) => setStatus(event.currentTarget.value)}>
            <option value="all">all</option>
            {STATUSES.map((value) => (
              <option key={value} value={value}>
                {value}
              </option>
            ))}
          </select>
        </label>
        <button type="button" class="secondary" onClick={catalog.reload}>
          Refresh
        </button>
      </form>
      <ErrorMessage error={catalog.error} title="The models could not be listed" />
      {models === undefined && catalog.loading && <Loading what="models" />}
      {models !== undefined && models.length === 0 && (
        <p>
          No models yet. <a href={href({ view: "publish" })}>Publish one</a> by dropping an .onnx file.
        </p>
      )}
      {models?.map((model) =>
        model.error === undefined ? null : (
          <ErrorMessage
            key={model.name}
            error={model.error}
            title={`The versions of ${model.name} could not be read`}
          />
        ),
      )}
      {models !== undefined && models.length > 0 && (
        <div class="table-scroll">
          <table class="versions">
            <caption class="visually-hidden">Models and their versions, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Model</th>
                <th scope="col">Version</th>
                <th scope="col">Status</th>
                <th scope="col">Target</th>
                <th scope="col">Serving</th>
                <th scope="col">Aliases</th>
                <th scope="col">Notes</th>
              </tr>
            </thead>
            <tbody>
              {rows.map(({ model, version }) => (
                <tr key={`${model.name}/${version.version}`} class={`row-${version.status}`}>
                  <th scope="row">
                    <a href={href({ view: "model", model: model.name, tab: "overview" })}>{model.name}</a>
                  </th>
                  <td>
                    <a
                      href={href({
                        view: "model",
                        model: model.name,
                        version: version.version,
                        tab: "overview",
                      })}
                      aria-label={`${model.name} version ${version.version}`}
                    >
                      {version.version}
                    </a>
                  </td>
                  <VersionCells version={version} />
                </tr>
              ))}
              {rows.length === 0 && (
                <tr>
                  <td colSpan={7}>No version matches the filter.</td>
                </tr>
              )}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
