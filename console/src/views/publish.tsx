/**
 * Publish a version by dropping its files: the .onnx model, and optionally its maas.json manifest and the
 * files the manifest names (tokenizer.json). Uploaded through presigned URLs with progress, then the
 * version's status is followed until it is ready or failed.
 */
import { useEffect, useRef, useState } from "preact/hooks";
import { MODEL_NAME_PATTERN, SIDE_FILE_PATTERN } from "../../../lambdas/core/model.ts";
import { type Api, ApiError } from "../api.ts";
import { ErrorMessage, StatusBadge } from "../components.tsx";
import { href } from "../router.ts";
import type { VersionRecord } from "../schemas.ts";
import { formatBytes } from "../tensors.ts";
import { partsFor, uploadFiles } from "../upload.ts";

const POLL_MS = 500;
/** Registration and optimization of a large model take minutes; past this the page stops waiting. */
const WAIT_LIMIT_MS = 15 * 60 * 1000;

/** The chosen files by the name they are uploaded as (`model.onnx`, `maas.json`, `tokenizer.json`). */
function classifyFiles(files: readonly File[]): { chosen: Map<string, File>; refused: string[] } {
  const chosen = new Map<string, File>();
  const refused: string[] = [];
  for (const file of files) {
    if (file.name.toLowerCase().endsWith(".onnx")) {
      if (chosen.has("model.onnx")) refused.push(`${file.name}: one .onnx model per version`);
      else chosen.set("model.onnx", file);
    } else if (SIDE_FILE_PATTERN.test(file.name)) {
      chosen.set(file.name, file);
    } else {
      refused.push(
        `${file.name}: only an .onnx model, maas.json and the .json files it names (tokenizer.json)`,
      );
    }
  }
  return { chosen, refused };
}

type Phase =
  | { step: "choosing" }
  | { step: "uploading" }
  | { step: "registering"; record?: VersionRecord }
  | { step: "done"; record: VersionRecord }
  | { step: "failed"; error: unknown };

async function nextVersion(api: Api, model: string): Promise<number> {
  try {
    const { versions } = await api.versions(model);
    return Math.max(0, ...versions.map((v) => v.version)) + 1;
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return 1;
    throw error;
  }
}

/** Checks a manifest before anything is uploaded: it must be JSON, and the files it names must be here. */
async function checkManifest(files: ReadonlyMap<string, File>): Promise<string | undefined> {
  const manifest = files.get("maas.json");
  if (manifest === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(await manifest.text());
  } catch {
    return "maas.json is not valid JSON.";
  }
  const tokenizer = (parsed as { tokenizer?: unknown } | null)?.tokenizer;
  if (typeof tokenizer === "string" && !files.has(tokenizer)) {
    return `maas.json names ${tokenizer}: add it (it is uploaded before the model).`;
  }
  return undefined;
}

export function PublishView({ api, model: initialModel }: { api: Api; model?: string }) {
  const [name, setName] = useState(initialModel ?? "");
  const [version, setVersion] = useState("");
  const [files, setFiles] = useState<Map<string, File>>(new Map());
  const [refused, setRefused] = useState<string[]>([]);
  const [dragging, setDragging] = useState(false);
  const [progress, setProgress] = useState<Record<string, number>>({});
  const [phase, setPhase] = useState<Phase>({ step: "choosing" });
  const [formError, setFormError] = useState<unknown>();
  const cancelled = useRef(false);
  useEffect(
    () => () => {
      cancelled.current = true;
    },
    [],
  );

  const suggestVersion = (model: string) => {
    if (!MODEL_NAME_PATTERN.test(model)) return;
    nextVersion(api, model).then(
      (next) => setVersion(String(next)),
      () => undefined,
    );
  };
  // Suggested once, for the model the page opened with.
  useEffect(() => {
    if (initialModel !== undefined) suggestVersion(initialModel);
  }, []);

  const addFiles = (list: FileList | null | undefined) => {
    const { chosen, refused: notTaken } = classifyFiles([...(list ?? [])]);
    setFiles((current) => new Map([...current, ...chosen]));
    setRefused(notTaken);
    setFormError(undefined);
  };

  const follow = async (model: string, number: number) => {
    const deadline = Date.now() + WAIT_LIMIT_MS;
    while (!cancelled.current) {
      try {
        const record = await api.version(model, number);
        if (record.status === "ready" || record.status === "failed") {
          setPhase({ step: "done", record });
          return;
        }
        setPhase({ step: "registering", record });
      } catch (error) {
        // 404 until the register function has read the upload.
        if (!(error instanceof ApiError && error.status === 404)) throw error;
      }
      if (Date.now() > deadline) throw new Error(`still not ready after ${WAIT_LIMIT_MS / 60000} minutes`);
      await new Promise((wake) => setTimeout(wake, POLL_MS));
    }
  };

  const publish = async (event: Event) => {
    event.preventDefault();
    setFormError(undefined);
    const model = name.trim();
    const number = Number(version);
    if (!MODEL_NAME_PATTERN.test(model)) {
      setFormError(
        new Error(
          "The name takes 1-64 lower-case letters, digits, '-', '_' or '.', starting with a letter or digit.",
        ),
      );
      return;
    }
    if (!Number.isInteger(number) || number < 1) {
      setFormError(new Error("The version is a positive whole number."));
      return;
    }
    if (!files.has("model.onnx")) {
      setFormError(new Error("Add the .onnx model file."));
      return;
    }
    const problem = await checkManifest(files);
    if (problem !== undefined) {
      setFormError(new Error(problem));
      return;
    }
    setPhase({ step: "uploading" });
    setProgress({});
    try {
      const specs = [...files].map(([file, blob]) =>
        partsFor(blob.size) === 1 ? file : { name: file, parts: partsFor(blob.size) },
      );
      const tickets = await api.uploads(model, number, specs);
      await uploadFiles(tickets, files, api.base, (file, loaded, total) =>
        setProgress((current) => ({ ...current, [file]: total === 0 ? 1 : loaded / total })),
      );
      setPhase({ step: "registering" });
      await follow(model, number);
    } catch (error) {
      setPhase({ step: "failed", error });
    }
  };

  const reset = () => {
    setFiles(new Map());
    setRefused([]);
    setProgress({});
    setPhase({ step: "choosing" });
    suggestVersion(name.trim());
  };

  const busy = phase.step === "uploading" || phase.step === "registering";
  const record = phase.step === "registering" || phase.step === "done" ? phase.record : undefined;

  return (
    <section aria-labelledby="publish-title">
      <h1 id="publish-title">Publish a model</h1>
      <p class="lead">
        Drop an ONNX model, with its <code>maas.json</code> manifest and <code>tokenizer.json</code> if it has
        them. Each version is uploaded once and never changes; the service checks it, registers it and
        optimizes it.
      </p>
      <form onSubmit={publish} aria-label="Publish a model" class="panel">
        <div class="row">
          <label>
            Model name
            <input
              name="model"
              value={name}
              required
              disabled={busy}
              autocomplete="off"
              pattern="[a-z0-9][a-z0-9._\-]{0,63}"
              title="lower-case letters, digits, '-', '_' or '.'"
              onInput={(event) => setName(event.currentTarget.value)}
              onChange={(event) => suggestVersion(event.currentTarget.value.trim())}
            />
          </label>
          <label>
            Version
            <input
              name="version"
              type="number"
              min={1}
              step={1}
              required
              disabled={busy}
              value={version}
              onInput={(event) => setVersion(event.currentTarget.value)}
            />
          </label>
        </div>
        {/* biome-ignore lint/a11y/noStaticElementInteractions: a drop target for the pointer; the file input inside it is the keyboard's way in. */}
        <div
          class={`dropzone${dragging ? " dragging" : ""}`}
          data-testid="publish-dropzone"
          onDragEnter={(event) => {
            event.preventDefault();
            setDragging(true);
          }}
          onDragOver={(event) => event.preventDefault()}
          onDragLeave={() => setDragging(false)}
          onDrop={(event) => {
            event.preventDefault();
            setDragging(false);
            if (!busy) addFiles(event.dataTransfer?.files);
          }}
        >
          <p>
            <strong>Drop files here</strong>: <code>model.onnx</code> (any name ending in .onnx), and
            optionally <code>maas.json</code> and <code>tokenizer.json</code>.
          </p>
          <label class="button secondary">
            Choose files
            <input
              class="visually-hidden"
              type="file"
              multiple
              accept=".onnx,.json"
              disabled={busy}
              onChange={(event) => addFiles(event.currentTarget.files)}
            />
          </label>
        </div>
        {refused.length > 0 && (
          <div class="error" role="alert">
            <strong>Not taken:</strong>
            <ul>
              {refused.map((reason) => (
                <li key={reason}>{reason}</li>
              ))}
            </ul>
          </div>
        )}
        {files.size > 0 && (
          <ul class="files" aria-label="Files to upload">
            {[...files].map(([file, blob]) => (
              <li key={file}>
                <span>
                  <code>{file}</code>
                  {blob.name !== file && <span class="muted"> ({blob.name})</span>} {formatBytes(blob.size)}
                </span>
                {progress[file] === undefined ? (
                  !busy && (
                    <button
                      type="button"
                      class="small secondary"
                      aria-label={`Remove ${file}`}
                      onClick={() =>
                        setFiles((current) => new Map([...current].filter(([key]) => key !== file)))
                      }
                    >
                      Remove
                    </button>
                  )
                ) : (
                  <progress
                    max={1}
                    value={progress[file]}
                    aria-label={`${file} uploaded`}
                    aria-valuetext={`${Math.round((progress[file] ?? 0) * 100)}%`}
                  />
                )}
              </li>
            ))}
          </ul>
        )}
        <ErrorMessage error={formError} title="Cannot publish yet" />
        <div class="actions">
          {phase.step === "choosing" || phase.step === "uploading" || phase.step === "registering" ? (
            <button type="submit" disabled={busy}>
              {phase.step === "uploading"
                ? "Uploading…"
                : phase.step === "registering"
                  ? "Registering…"
                  : "Publish"}
            </button>
          ) : (
            <button type="button" onClick={reset}>
              Publish another version
            </button>
          )}
        </div>
      </form>

      {phase.step !== "choosing" && (
        <section class="panel" aria-labelledby="progress-title">
          <h2 id="progress-title">
            {name.trim()} version {version}
          </h2>
          <ol class="steps" aria-live="polite">
            <li class={phase.step === "uploading" ? "current" : "done"}>Upload</li>
            <li class={record === undefined ? (phase.step === "registering" ? "current" : "") : "done"}>
              Registration
            </li>
            <li
              class={record?.status === "optimizing" ? "current" : record?.status === "ready" ? "done" : ""}
            >
              Optimization
            </li>
          </ol>
          <p role="status">
            {phase.step === "uploading" && "Uploading…"}
            {phase.step === "registering" && record === undefined && "Uploaded; waiting for registration…"}
            {record !== undefined && (
              <>
                Status: <StatusBadge status={record.status} />
              </>
            )}
          </p>
          {record?.status === "failed" && (
            <div class="error" role="alert">
              <strong>Registration failed:</strong> {record.reason ?? "no reason recorded"}
            </div>
          )}
          {record?.status === "ready" && (
            <p class="success">
              Ready on {record.target}, serving {record.serving ?? "original"}.{" "}
              <a href={href({ view: "model", model: record.name, version: record.version, tab: "try" })}>
                Try it
              </a>{" "}
              or{" "}
              <a href={href({ view: "model", model: record.name, version: record.version, tab: "overview" })}>
                promote it
              </a>
              .
            </p>
          )}
          {phase.step === "failed" && <ErrorMessage error={phase.error} title="The publish did not finish" />}
        </section>
      )}
    </section>
  );
}
