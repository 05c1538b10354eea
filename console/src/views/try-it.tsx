/**
 * Try a version: a form from its signature (tensors as editable JSON, random inputs of the right shape),
 * or for task models a text box or an image drop zone; the answer as bars, an embedding's norm, or
 * tensors, with the request's latency and the backend and variant that answered.
 */
import { useEffect, useState } from "preact/hooks";
import type { Api, InferResult } from "../api.ts";
import { Bars, ErrorMessage, Loading, useResource } from "../components.tsx";
import {
  type ModelMetadata,
  type OutputTensor,
  servable,
  type TensorMetadata,
  type VersionRecord,
} from "../schemas.ts";
import {
  describeShape,
  formatMs,
  formatNumber,
  type Nested,
  norm,
  preview,
  randomInput,
  rowsOf,
  shapeOf,
  toNumber,
} from "../tensors.ts";

const TEXT_TASKS = new Set(["text-classification", "feature-extraction"]);
const IMAGE_TASK = "image-classification";
/** Rows whose answer is drawn; the rest are in the raw response. */
const SHOWN_ROWS = 8;

type Mode = "text" | "image" | "tensors";

function taskOf(version: VersionRecord, metadata: ModelMetadata | undefined): string | undefined {
  return metadata?.parameters?.task?.name ?? version.task?.kind;
}

function signatureInputs(version: VersionRecord): TensorMetadata[] {
  return (version.signature?.inputs ?? []).map((input) => ({
    name: input.name,
    datatype: input.datatype,
    shape: input.shape.map((dim) => (typeof dim === "number" ? dim : -1)),
  }));
}

/** A request that runs on the version as it is: a sample text, an image placeholder, or random tensors. */
export function exampleBody(version: VersionRecord): unknown {
  const task = version.task?.kind;
  if (task !== undefined && TEXT_TASKS.has(task)) {
    return {
      inputs: [{ name: "text", datatype: "BYTES", shape: [1], data: ["A sentence to try."] }],
      ...(task === "text-classification" ? { parameters: { top_k: 3 } } : {}),
    };
  }
  if (task === IMAGE_TASK) {
    return {
      inputs: [{ name: "image", datatype: "BYTES", shape: [1], data: ["<base64 of a JPEG, PNG or WebP>"] }],
    };
  }
  return {
    inputs: signatureInputs(version).map((input) => {
      const data = randomInput(input);
      return { name: input.name, shape: shapeOf(data), datatype: input.datatype, data };
    }),
  };
}

function readAsBase64(file: File): Promise<string> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.addEventListener("load", () => resolve(String(reader.result).replace(/^data:[^,]*,/, "")));
    reader.addEventListener("error", () => reject(new Error(`${file.name} could not be read`)));
    reader.readAsDataURL(file);
  });
}

export function TryIt({ api, version }: { api: Api; version: VersionRecord }) {
  if (!servable(version)) {
    return (
      <section class="panel" aria-labelledby="try-title">
        <h2 id="try-title">Try version {version.version}</h2>
        <p role="status">
          Version {version.version} is {version.status}
          {version.reason === undefined ? "" : `: ${version.reason}`}. Only a ready version can be tried.
        </p>
      </section>
    );
  }
  return <TryServable api={api} version={version} />;
}

/** A version that serves: its signature read first (a version that does not serve is never asked). */
function TryServable({ api, version }: { api: Api; version: VersionRecord }) {
  const metadata = useResource(
    () => api.metadata(version.name, version.version),
    `${version.name}/${version.version}`,
  );
  if (metadata.data === undefined) {
    return metadata.error === undefined ? (
      <Loading what="its signature" />
    ) : (
      <ErrorMessage error={metadata.error} title="Its metadata could not be read" />
    );
  }
  return (
    <TryForm
      key={`${version.name}/${version.version}`}
      api={api}
      version={version}
      metadata={metadata.data}
    />
  );
}

function TryForm({ api, version, metadata }: { api: Api; version: VersionRecord; metadata: ModelMetadata }) {
  const task = taskOf(version, metadata);
  const taskMode: Mode | undefined =
    task === IMAGE_TASK ? "image" : task !== undefined && TEXT_TASKS.has(task) ? "text" : undefined;
  const [mode, setMode] = useState<Mode>(taskMode ?? "tensors");
  const [texts, setTexts] = useState("I love this product.\nThis was a waste of money.");
  const [topK, setTopK] = useState(3);
  const [images, setImages] = useState<File[]>([]);
  const [previews, setPreviews] = useState<string[]>([]);
  const [tensors, setTensors] = useState<Record<string, string>>(() => randomTensors(metadata.inputs));
  const [result, setResult] = useState<InferResult | undefined>();
  const [error, setError] = useState<unknown>();
  const [running, setRunning] = useState(false);

  useEffect(() => {
    const urls = images.map((image) => URL.createObjectURL(image));
    setPreviews(urls);
    return () => {
      for (const url of urls) URL.revokeObjectURL(url);
    };
  }, [images]);

  const build = async (): Promise<unknown> => {
    if (mode === "text") {
      const rows = texts.split("\n").filter((line) => line.trim() !== "");
      if (rows.length === 0) throw new Error("Type at least one text, one per line.");
      return {
        inputs: [{ name: "text", datatype: "BYTES", shape: [rows.length], data: rows }],
        ...(task === "text-classification" ? { parameters: { top_k: topK } } : {}),
      };
    }
    if (mode === "image") {
      if (images.length === 0) throw new Error("Drop or choose at least one image.");
      const data = await Promise.all(images.map(readAsBase64));
      return {
        inputs: [{ name: "image", datatype: "BYTES", shape: [data.length], data }],
        parameters: { top_k: topK },
      };
    }
    return {
      inputs: metadata.inputs.map((input) => {
        let data: unknown;
        try {
          data = JSON.parse(tensors[input.name] ?? "");
        } catch {
          throw new Error(`${input.name}: not valid JSON`);
        }
        let shape: number[];
        try {
          shape = shapeOf(data);
        } catch (caught) {
          throw new Error(`${input.name}: ${(caught as Error).message}`);
        }
        return { name: input.name, datatype: input.datatype, shape, data };
      }),
    };
  };

  const run = async (event: Event) => {
    event.preventDefault();
    setRunning(true);
    setError(undefined);
    try {
      setResult(await api.infer(version.name, version.version, await build()));
    } catch (caught) {
      setResult(undefined);
      setError(caught);
    } finally {
      setRunning(false);
    }
  };

  const addImages = (files: FileList | null | undefined) => {
    const chosen = [...(files ?? [])].filter((file) => /^image\/(jpeg|png|webp)$/.test(file.type));
    if (chosen.length === 0) {
      setError(new Error("Only JPEG, PNG and WebP images can be sent."));
      return;
    }
    setError(undefined);
    setImages(chosen);
  };

  return (
    <section class="panel" aria-labelledby="try-title">
      <h2 id="try-title">Try version {version.version}</h2>
      {taskMode !== undefined && (
        <fieldset class="segmented">
          <legend>Send</legend>
          <label>
            <input type="radio" name="mode" checked={mode === taskMode} onChange={() => setMode(taskMode)} />
            {taskMode === "text" ? "Text" : "Images"} ({task})
          </label>
          <label>
            <input
              type="radio"
              name="mode"
              checked={mode === "tensors"}
              onChange={() => setMode("tensors")}
            />
            Tensors
          </label>
        </fieldset>
      )}
      <form onSubmit={run} aria-label="Try it">
        {mode === "text" && (
          <label class="block">
            Texts, one per line
            <textarea
              class="wide"
              rows={4}
              value={texts}
              onInput={(event) => setTexts(event.currentTarget.value)}
            />
          </label>
        )}
        {mode === "image" && (
          // biome-ignore lint/a11y/noStaticElementInteractions: a drop target for the pointer; the file input inside it is the keyboard's way in.
          <div
            class="dropzone"
            data-testid="image-dropzone"
            onDragOver={(event) => event.preventDefault()}
            onDrop={(event) => {
              event.preventDefault();
              addImages(event.dataTransfer?.files);
            }}
          >
            <p>Drop JPEG, PNG or WebP images here, or</p>
            <label class="button secondary">
              Choose images
              <input
                class="visually-hidden"
                type="file"
                accept="image/jpeg,image/png,image/webp"
                multiple
                onChange={(event) => addImages(event.currentTarget.files)}
              />
            </label>
            <div class="thumbs">
              {previews.map((url, index) => (
                <img key={url} src={url} alt={images[index]?.name ?? "chosen image"} />
              ))}
            </div>
          </div>
        )}
        {(mode === "image" || (mode === "text" && task === "text-classification")) && (
          <label class="inline">
            Top labels
            <input
              type="number"
              min={1}
              max={20}
              value={topK}
              onInput={(event) => setTopK(Math.max(1, Number(event.currentTarget.value) || 1))}
            />
          </label>
        )}
        {mode === "tensors" && (
          <>
            {metadata.inputs.map((input) => (
              <div key={input.name} class="tensor-input">
                <label class="tensor-label" for={`input-${input.name}`}>
                  <code>{input.name}</code> {input.datatype} {describeShape(input.shape)}
                </label>
                <textarea
                  class="wide"
                  id={`input-${input.name}`}
                  rows={Math.min(10, 2 + (tensors[input.name]?.length ?? 0) / 80)}
                  spellcheck={false}
                  value={tensors[input.name]}
                  onInput={(event) => setTensors({ ...tensors, [input.name]: event.currentTarget.value })}
                />
                <button
                  type="button"
                  class="secondary small"
                  onClick={() => setTensors({ ...tensors, [input.name]: JSON.stringify(randomInput(input)) })}
                >
                  Random {input.name} of the right shape
                </button>
              </div>
            ))}
            <p class="muted">Nested JSON arrays: the shape is read from the nesting.</p>
          </>
        )}
        <div class="actions">
          <button type="submit" disabled={running}>
            {running ? "Running…" : "Run"}
          </button>
        </div>
      </form>
      <ErrorMessage error={error} title="The request failed" />
      {result !== undefined && <Answer result={result} metadata={metadata} version={version} />}
    </section>
  );
}

function randomTensors(inputs: readonly TensorMetadata[]): Record<string, string> {
  return Object.fromEntries(
    inputs.map((input) => [input.name, JSON.stringify(randomInput(input) as Nested)]),
  );
}

function Answer({
  result,
  metadata,
  version,
}: {
  result: InferResult;
  metadata: ModelMetadata;
  version: VersionRecord;
}) {
  const outputs = result.response.outputs;
  const byName = new Map(outputs.map((output) => [output.name, output]));
  const label = byName.get("label");
  const score = byName.get("score");
  const embedding = byName.get("embedding");
  return (
    <section class="answer" aria-labelledby="answer-title" aria-live="polite">
      <h3 id="answer-title">Answer</h3>
      <dl class="facts inline-facts">
        <dt>Latency</dt>
        <dd>{formatMs(result.latencyMs)}</dd>
        <dt>Backend</dt>
        <dd>{result.backend ?? "–"}</dd>
        <dt>Version</dt>
        <dd>{result.version ?? result.response.model_version ?? "–"}</dd>
        <dt>Variant</dt>
        <dd>{result.variant ?? "–"}</dd>
      </dl>
      {label !== undefined && score !== undefined ? (
        <LabelScores label={label} score={score} />
      ) : embedding !== undefined ? (
        <Embeddings output={embedding} />
      ) : (
        outputs.map((output) => (
          <TensorAnswer key={output.name} output={output} metadata={metadata} version={version} />
        ))
      )}
      <details>
        <summary>Raw response</summary>
        <pre class="code">
          <code>{JSON.stringify(result.response, null, 2).slice(0, 20_000)}</code>
        </pre>
      </details>
    </section>
  );
}

function LabelScores({ label, score }: { label: OutputTensor; score: OutputTensor }) {
  const labels = rowsOf(label, String);
  const scores = rowsOf(score, toNumber);
  return (
    <>
      {labels.slice(0, SHOWN_ROWS).map((row, index) => (
        <Bars
          key={index}
          caption={labels.length > 1 ? `Row ${index + 1}` : "Labels and scores"}
          bars={row.map((name, at) => ({ label: name, value: scores[index]?.[at] ?? 0 }))}
        />
      ))}
    </>
  );
}

function Embeddings({ output }: { output: OutputTensor }) {
  const rows = rowsOf(output, toNumber);
  return (
    <div class="table-scroll">
      <table>
        <caption>Embeddings, {rows[0]?.length ?? 0} dimensions</caption>
        <thead>
          <tr>
            <th scope="col">Row</th>
            <th scope="col">Norm</th>
            <th scope="col">First values</th>
          </tr>
        </thead>
        <tbody>
          {rows.slice(0, SHOWN_ROWS).map((row, index) => (
            <tr key={index}>
              <th scope="row">{index + 1}</th>
              <td>{formatNumber(norm(row))}</td>
              <td>
                <code>{row.slice(0, 8).map(formatNumber).join(", ")}…</code>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function TensorAnswer({
  output,
  metadata,
  version,
}: {
  output: OutputTensor;
  metadata: ModelMetadata;
  version: VersionRecord;
}) {
  const width = output.shape[output.shape.length - 1];
  const labels =
    metadata.parameters?.class_labels?.[output.name] ??
    (version.labels !== undefined && version.labels.length === width && output.datatype.startsWith("FP")
      ? version.labels
      : undefined);
  return (
    <div class="tensor-answer">
      <h4>
        <code>{output.name}</code> {output.datatype} {describeShape(output.shape)}
      </h4>
      {output.datatype === "BYTES" ? (
        <p class="bytes-output">
          {(output.data as unknown[]).flat(Number.POSITIVE_INFINITY).slice(0, 32).map(String).join(", ")}
        </p>
      ) : labels !== undefined ? (
        <Bars
          caption="First row, by label"
          bars={(rowsOf(output, toNumber)[0] ?? []).map((value, index) => ({
            label: labels[index] ?? String(index),
            value,
          }))}
        />
      ) : (
        <code class="preview">{preview(output)}</code>
      )}
    </div>
  );
}
