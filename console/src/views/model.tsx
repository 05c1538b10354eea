/** One model: its versions, aliases, signature, manifest, variants and snippets; its try-it and figures tabs. */
import { Fragment } from "preact";
import { useState } from "preact/hooks";
import type { Api } from "../api.ts";
import {
  ConfirmDialog,
  CopyButton,
  ErrorMessage,
  Loading,
  StatusBadge,
  useResource,
} from "../components.tsx";
import { href, type ModelTab, navigate } from "../router.ts";
import { type AliasRecord, servable, type TensorSpec, type Variant, type VersionRecord } from "../schemas.ts";
import { SNIPPET_LANGUAGES, type SnippetLanguage, snippet } from "../snippets.ts";
import { describeShape, formatBytes, formatNumber } from "../tensors.ts";
import { FiguresPanel } from "./figures.tsx";
import { VersionCells, VersionNotes } from "./models.tsx";
import { exampleBody, TryIt } from "./try-it.tsx";

/** The version a model page opens on: the default alias's, else the newest that serves, else the newest. */
function defaultVersion(versions: readonly VersionRecord[]): VersionRecord | undefined {
  return (
    versions.find((v) => v.aliases.includes("default")) ??
    [...versions].reverse().find(servable) ??
    versions[versions.length - 1]
  );
}

interface ModelData {
  readonly versions: readonly VersionRecord[];
  readonly aliases: readonly AliasRecord[];
}

export function ModelView(props: { api: Api; model: string; version?: number; tab: ModelTab }) {
  const { api, model, tab } = props;
  const data = useResource<ModelData>(
    async () => {
      const [{ versions }, { aliases }] = await Promise.all([api.versions(model), api.aliases(model)]);
      return { versions, aliases };
    },
    model,
    4000,
  );
  const versions = data.data?.versions ?? [];
  const selected =
    props.version === undefined
      ? defaultVersion(versions)
      : versions.find((v) => v.version === props.version);
  const tabs: { id: ModelTab; label: string }[] = [
    { id: "overview", label: "Overview" },
    { id: "try", label: "Try it" },
    { id: "figures", label: "Figures" },
  ];

  return (
    <section aria-labelledby="model-title">
      <div class="title-row">
        <h1 id="model-title">{model}</h1>
        {versions.length > 1 && (
          <label class="inline">
            Version
            <select
              value={selected?.version}
              onChange={(event) =>
                navigate({ view: "model", model, version: Number(event.currentTarget.value), tab })
              }
            >
              {[...versions].reverse().map((v) => (
                <option key={v.version} value={v.version}>
                  {v.version} ({v.status}
                  {v.aliases.length > 0 ? `, ${v.aliases.join(", ")}` : ""})
                </option>
              ))}
            </select>
          </label>
        )}
        <a class="button secondary" href={href({ view: "publish", model })}>
          Publish a new version
        </a>
      </div>
      {selected?.description !== undefined && <p class="lead">{selected.description}</p>}
      <nav class="tabs" aria-label={`${model} sections`}>
        {tabs.map((t) => (
          <a
            key={t.id}
            href={href({
              view: "model",
              model,
              tab: t.id,
              ...(props.version === undefined ? {} : { version: props.version }),
            })}
            aria-current={t.id === tab ? "page" : undefined}
          >
            {t.label}
          </a>
        ))}
      </nav>
      <ErrorMessage error={data.error} title={`${model} could not be read`} />
      {data.data === undefined && data.loading && <Loading what={model} />}
      {data.data !== undefined && selected === undefined && (
        <ErrorMessage error={new Error(`${model} has no version ${props.version ?? ""}`)} title="Not found" />
      )}
      {data.data !== undefined && selected !== undefined && tab === "overview" && (
        <Overview api={api} model={model} data={data.data} selected={selected} reload={data.reload} />
      )}
      {selected !== undefined && tab === "try" && <TryIt api={api} version={selected} />}
      {tab === "figures" && <FiguresPanel api={api} model={model} />}
    </section>
  );
}

function Overview(props: {
  api: Api;
  model: string;
  data: ModelData;
  selected: VersionRecord;
  reload: () => void;
}) {
  const { api, model, data, selected, reload } = props;
  return (
    <>
      <VersionsPanel api={api} model={model} data={data} selected={selected} reload={reload} />
      <VersionDetails version={selected} />
      {selected.signature !== undefined && <SignaturePanel signature={selected.signature} />}
      <ManifestPanel version={selected} />
      <VariantsPanel api={api} version={selected} reload={reload} />
      {servable(selected) && <SnippetsPanel api={api} version={selected} />}
    </>
  );
}

type PendingAction =
  | { kind: "move"; alias: string; version: number; from?: number }
  | { kind: "rollback"; alias: string; from: number; to: number }
  | { kind: "variant"; version: VersionRecord; variant: Variant };

/** Alias moves, rollbacks and variant choices, each behind a confirmation. */
function useConfirmedAction(api: Api, model: string, reload: () => void) {
  const [pending, setPending] = useState<PendingAction | undefined>();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const [done, setDone] = useState<string | undefined>();
  const run = async () => {
    if (pending === undefined) return;
    setBusy(true);
    setError(undefined);
    try {
      if (pending.kind === "move") {
        await api.moveAlias(model, pending.alias, pending.version);
        setDone(`Alias ${pending.alias} now points at version ${pending.version}.`);
      } else if (pending.kind === "rollback") {
        const alias = await api.rollback(model, pending.alias);
        setDone(`Alias ${pending.alias} rolled back to version ${alias.version}.`);
      } else {
        await api.chooseVariant(model, pending.version.version, pending.variant.kind);
        setDone(`Version ${pending.version.version} now serves ${pending.variant.kind}.`);
      }
      setPending(undefined);
      reload();
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  };
  const ask = (action: PendingAction) => {
    setError(undefined);
    setDone(undefined);
    setPending(action);
  };
  const dialog = pending !== undefined && (
    <ConfirmDialog
      open={pending !== undefined}
      title={
        pending.kind === "move"
          ? `Move alias ${pending.alias}?`
          : pending.kind === "rollback"
            ? `Roll back alias ${pending.alias}?`
            : `Serve ${pending.variant.kind}?`
      }
      confirmLabel={
        pending.kind === "move" ? "Move alias" : pending.kind === "rollback" ? "Roll back" : "Serve it"
      }
      busy={busy}
      error={error}
      onConfirm={run}
      onCancel={() => setPending(undefined)}
    >
      {pending.kind === "move" && (
        <p>
          Callers of <code>{`${model}:${pending.alias}`}</code> will be served version{" "}
          <strong>{pending.version}</strong>
          {pending.from === undefined ? " (a new alias)" : ` instead of version ${pending.from}`} within
          seconds.
        </p>
      )}
      {pending.kind === "rollback" && (
        <p>
          Callers of <code>{`${model}:${pending.alias}`}</code> go back from version {pending.from} to version{" "}
          <strong>{pending.to}</strong>.
        </p>
      )}
      {pending.kind === "variant" && (
        <p>
          Version {pending.version.version} will answer with <strong>{pending.variant.kind}</strong> instead
          of {pending.version.serving ?? "original"}.
          {pending.variant.parity?.lossless === false &&
            " This variant is lossy: its outputs differ slightly from the original's (see its parity figures)."}
        </p>
      )}
    </ConfirmDialog>
  );
  return { ask, dialog, done };
}

function VersionsPanel(props: {
  api: Api;
  model: string;
  data: ModelData;
  selected: VersionRecord;
  reload: () => void;
}) {
  const { api, model, data, selected, reload } = props;
  const { ask, dialog, done } = useConfirmedAction(api, model, reload);
  const readyVersions = data.versions.filter(servable);
  const [alias, setAlias] = useState("default");
  const [target, setTarget] = useState<number | undefined>(undefined);
  const current = (name: string) => data.aliases.find((a) => a.alias === name);
  const moveTarget = target ?? readyVersions[readyVersions.length - 1]?.version;

  return (
    <section aria-labelledby="versions-title" class="panel">
      <h2 id="versions-title">Versions and aliases</h2>
      {done !== undefined && (
        <p class="success" role="status">
          {done}
        </p>
      )}
      <div class="table-scroll">
        <table class="versions">
          <caption class="visually-hidden">Versions of {model}, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Version</th>
              <th scope="col">Status</th>
              <th scope="col">Target</th>
              <th scope="col">Serving</th>
              <th scope="col">Aliases</th>
              <th scope="col">Notes</th>
              <th scope="col">
                <span class="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {[...data.versions].reverse().map((v) => (
              <tr key={v.version} class={v.version === selected.version ? "selected" : undefined}>
                <th scope="row">
                  <a
                    href={href({ view: "model", model, version: v.version, tab: "overview" })}
                    aria-current={v.version === selected.version ? "true" : undefined}
                  >
                    {v.version}
                  </a>
                </th>
                <VersionCells version={v} />
                <td>
                  {servable(v) && !v.aliases.includes("default") && (
                    <button
                      type="button"
                      class="small"
                      onClick={() =>
                        ask({
                          kind: "move",
                          alias: "default",
                          version: v.version,
                          from: current("default")?.version,
                        })
                      }
                    >
                      Make default
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>

      <h3>Aliases</h3>
      {data.aliases.length === 0 ? (
        <p class="muted">
          No aliases: unversioned calls get the newest ready version. Point <code>default</code> at a version
          to pin what they get.
        </p>
      ) : (
        <div class="table-scroll">
          <table>
            <caption class="visually-hidden">Aliases of {model}</caption>
            <thead>
              <tr>
                <th scope="col">Alias</th>
                <th scope="col">Version</th>
                <th scope="col">Previous</th>
                <th scope="col">Moved</th>
                <th scope="col">
                  <span class="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {data.aliases.map((a) => (
                <tr key={a.alias}>
                  <th scope="row">{a.alias}</th>
                  <td>{a.version}</td>
                  <td>{a.previous ?? "–"}</td>
                  <td>{new Date(a.updatedAt).toLocaleString()}</td>
                  <td>
                    {a.previous !== undefined && (
                      <button
                        type="button"
                        class="small secondary"
                        aria-label={`Roll back ${a.alias} to version ${a.previous}`}
                        onClick={() =>
                          ask({ kind: "rollback", alias: a.alias, from: a.version, to: a.previous! })
                        }
                      >
                        Roll back to {a.previous}
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {readyVersions.length > 0 && (
        <form
          class="inline-form"
          aria-label="Move an alias"
          onSubmit={(event) => {
            event.preventDefault();
            if (moveTarget === undefined) return;
            ask({
              kind: "move",
              alias: alias.trim(),
              version: moveTarget,
              from: current(alias.trim())?.version,
            });
          }}
        >
          <label>
            Alias
            <input
              name="alias"
              value={alias}
              required
              pattern="[a-z][a-z0-9_\-]{0,63}"
              title="a lower-case letter, then letters, digits, '-' or '_'"
              list="alias-names"
              onInput={(event) => setAlias(event.currentTarget.value)}
            />
            <datalist id="alias-names">
              {data.aliases.map((a) => (
                <option key={a.alias} value={a.alias} />
              ))}
            </datalist>
          </label>
          <label>
            Version
            <select value={moveTarget} onChange={(event) => setTarget(Number(event.currentTarget.value))}>
              {[...readyVersions].reverse().map((v) => (
                <option key={v.version} value={v.version}>
                  {v.version}
                </option>
              ))}
            </select>
          </label>
          <button type="submit">Move alias</button>
        </form>
      )}
      {dialog}
    </section>
  );
}

function VersionDetails({ version }: { version: VersionRecord }) {
  return (
    <section aria-labelledby="details-title" class="panel">
      <h2 id="details-title">Version {version.version}</h2>
      <dl class="facts">
        <dt>Status</dt>
        <dd>
          <StatusBadge status={version.status} />
        </dd>
        {version.reason !== undefined && (
          <>
            <dt>Reason</dt>
            <dd class="reason">{version.reason}</dd>
          </>
        )}
        <dt>Target</dt>
        <dd>{version.target}</dd>
        <dt>Serving</dt>
        <dd>
          {version.serving ?? "–"}
          {version.variantChoice !== undefined && ` (chosen by the ${version.variantChoice.by})`}
        </dd>
        {version.bytes !== undefined && (
          <>
            <dt>Size</dt>
            <dd>{formatBytes(version.bytes)}</dd>
          </>
        )}
        {version.sha256 !== undefined && (
          <>
            <dt>sha256</dt>
            <dd>
              <code class="hash">{version.sha256}</code>
            </dd>
          </>
        )}
        <dt>Created</dt>
        <dd>{new Date(version.createdAt).toLocaleString()}</dd>
        {version.optimizedAt !== undefined && (
          <>
            <dt>Optimized</dt>
            <dd>{new Date(version.optimizedAt).toLocaleString()}</dd>
          </>
        )}
        {version.rejectedUpload !== undefined && (
          <>
            <dt>Refused upload</dt>
            <dd>{version.rejectedUpload.reason}</dd>
          </>
        )}
      </dl>
      <VersionNotes version={version} />
    </section>
  );
}

function TensorTable({ title, tensors }: { title: string; tensors: readonly TensorSpec[] }) {
  return (
    <div class="table-scroll">
      <table>
        <caption>{title}</caption>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Datatype</th>
            <th scope="col">Shape</th>
            <th scope="col">Labels</th>
          </tr>
        </thead>
        <tbody>
          {tensors.map((tensor) => (
            <tr key={tensor.name}>
              <th scope="row">
                <code>{tensor.name}</code>
              </th>
              <td>{tensor.datatype}</td>
              <td>
                <code>{describeShape(tensor.shape)}</code>
              </td>
              <td>{tensor.classLabels?.join(", ") ?? "–"}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function SignaturePanel({ signature }: { signature: NonNullable<VersionRecord["signature"]> }) {
  return (
    <section aria-labelledby="signature-title" class="panel">
      <h2 id="signature-title">Signature</h2>
      <p class="muted">Dimensions shown as ? or a name are dynamic.</p>
      <div class="two-columns">
        <TensorTable title="Inputs" tensors={signature.inputs} />
        <TensorTable title="Outputs" tensors={signature.outputs} />
      </div>
    </section>
  );
}

function ManifestPanel({ version }: { version: VersionRecord }) {
  const entries: [string, string][] = [];
  if (version.description !== undefined) entries.push(["Description", version.description]);
  if (version.task !== undefined) {
    const { kind, ...settings } = version.task;
    const shown = Object.entries(settings)
      .filter(([, value]) => typeof value !== "object")
      .map(([key, value]) => `${key} ${String(value)}`)
      .join(", ");
    entries.push(["Task", shown === "" ? kind : `${kind} (${shown})`]);
  }
  if (version.labels !== undefined) entries.push(["Labels", version.labels.join(", ")]);
  if (version.tags !== undefined) {
    entries.push([
      "Tags",
      Object.entries(version.tags)
        .map(([key, value]) => `${key}=${value}`)
        .join(", "),
    ]);
  }
  if (version.capture !== undefined) {
    const { samplePercent, requests, responses } = version.capture;
    entries.push([
      "Capture",
      samplePercent === 0
        ? "off"
        : `${samplePercent}% of ${[requests && "requests", responses && "responses"].filter(Boolean).join(" and ")}`,
    ]);
  }
  if (version.variantChoice?.by === "manifest")
    entries.push(["Variant", `${version.variantChoice.kind} (allowed by the manifest)`]);
  return (
    <section aria-labelledby="manifest-title" class="panel">
      <h2 id="manifest-title">Manifest</h2>
      {entries.length === 0 ? (
        <p class="muted">Published without a manifest (maas.json): defaults throughout.</p>
      ) : (
        <dl class="facts">
          {entries.map(([term, value]) => (
            <Fragment key={term}>
              <dt>{term}</dt>
              <dd>{value}</dd>
            </Fragment>
          ))}
        </dl>
      )}
    </section>
  );
}

function parityText(variant: Variant): string {
  const parity = variant.parity;
  if (parity === undefined) return variant.kind === "original" ? "reference" : "–";
  const parts = [
    parity.passed ? "passed" : `failed${parity.reason === undefined ? "" : `: ${parity.reason}`}`,
    `cosine ${formatNumber(parity.cosine)}`,
    `max abs diff ${formatNumber(parity.maxAbsDiff)}`,
  ];
  if (parity.top1Agreement !== undefined) parts.push(`top-1 ${formatNumber(parity.top1Agreement)}`);
  if (parity.lossless !== undefined) parts.push(parity.lossless ? "lossless" : "lossy");
  return parts.join(", ");
}

function VariantsPanel({ api, version, reload }: { api: Api; version: VersionRecord; reload: () => void }) {
  const { ask, dialog, done } = useConfirmedAction(api, version.name, reload);
  const serving = version.serving ?? "original";
  const variants: Variant[] = version.variants.some((v) => v.kind === "original")
    ? [...version.variants]
    : [
        { kind: "original", bytes: version.bytes ?? 0, selected: serving === "original" },
        ...version.variants,
      ];
  const canChoose = servable(version);
  return (
    <section aria-labelledby="variants-title" class="panel">
      <h2 id="variants-title">Variants</h2>
      {done !== undefined && (
        <p class="success" role="status">
          {done}
        </p>
      )}
      {version.variants.length === 0 && (
        <p class="muted">
          {version.status === "optimizing"
            ? "Being optimized: variants appear when it finishes."
            : "No variants built."}
        </p>
      )}
      <div class="table-scroll">
        <table>
          <caption class="visually-hidden">Variants of version {version.version}</caption>
          <thead>
            <tr>
              <th scope="col">Kind</th>
              <th scope="col">Size</th>
              <th scope="col">p50 ms</th>
              <th scope="col">Win rate</th>
              <th scope="col">Load ms</th>
              <th scope="col">Parity</th>
              <th scope="col">Serving</th>
            </tr>
          </thead>
          <tbody>
            {variants.map((variant) => (
              <tr key={variant.kind} class={variant.kind === serving ? "selected" : undefined}>
                <th scope="row">
                  <code>{variant.kind}</code>
                  {variant.detail !== undefined && <div class="muted small-text">{variant.detail}</div>}
                </th>
                <td>{formatBytes(variant.bytes)}</td>
                <td>{variant.p50Ms === undefined ? "–" : formatNumber(variant.p50Ms)}</td>
                <td>{variant.winRate === undefined ? "–" : `${Math.round(variant.winRate * 100)}%`}</td>
                <td>{variant.loadMs === undefined ? "–" : formatNumber(variant.loadMs)}</td>
                <td>
                  {variant.error === undefined ? (
                    parityText(variant)
                  ) : (
                    <span class="reason">{variant.error}</span>
                  )}
                </td>
                <td>
                  {variant.kind === serving ? (
                    <strong>serving</strong>
                  ) : canChoose && variant.error === undefined && variant.parity?.passed !== false ? (
                    <button
                      type="button"
                      class="small secondary"
                      aria-label={`Serve ${variant.kind}`}
                      onClick={() => ask({ kind: "variant", version, variant })}
                    >
                      Serve this
                    </button>
                  ) : (
                    "–"
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {dialog}
    </section>
  );
}

function SnippetsPanel({ api, version }: { api: Api; version: VersionRecord }) {
  const [language, setLanguage] = useState<SnippetLanguage>("curl");
  const body = exampleBody(version);
  const text = snippet(language, { url: api.url(api.inferPath(version.name, version.version)), body });
  return (
    <section aria-labelledby="snippets-title" class="panel">
      <h2 id="snippets-title">Call it</h2>
      <p class="muted">
        Set <code>MAAS_API_KEY</code> to your API key first.
      </p>
      <fieldset class="tabs small-tabs">
        <legend class="visually-hidden">Language</legend>
        {SNIPPET_LANGUAGES.map((l) => (
          <button
            key={l.id}
            type="button"
            class="secondary small"
            aria-pressed={l.id === language}
            onClick={() => setLanguage(l.id)}
          >
            {l.label}
          </button>
        ))}
      </fieldset>
      <pre class="code">
        <code>{text}</code>
      </pre>
      <CopyButton text={text} label="Copy snippet" />
    </section>
  );
}
