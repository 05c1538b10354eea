/** Pieces every view uses: loading data, showing errors and statuses, confirming, bars. */
import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { ApiError } from "./api.ts";
import { formatNumber } from "./tensors.ts";

export interface Resource<T> {
  readonly data: T | undefined;
  readonly error: unknown;
  readonly loading: boolean;
  reload(): void;
}

/**
 * Loads on mount and whenever `key` changes; with `refreshMs`, again on that interval while the page is
 * visible (the last data stays on screen while a refresh is in flight).
 */
export function useResource<T>(load: () => Promise<T>, key: string, refreshMs?: number): Resource<T> {
  const [state, setState] = useState<{ key: string; data?: T; error?: unknown; loading: boolean }>({
    key,
    loading: true,
  });
  const [tick, setTick] = useState(0);
  const loader = useRef(load);
  loader.current = load;
  useEffect(() => {
    let current = true;
    setState((previous) => ({ ...(previous.key === key ? previous : { key }), loading: true }));
    loader.current().then(
      (data) => current && setState({ key, data, loading: false }),
      (error: unknown) => current && setState((previous) => ({ ...previous, key, error, loading: false })),
    );
    return () => {
      current = false;
    };
  }, [key, tick]);
  useEffect(() => {
    if (refreshMs === undefined) return;
    const timer = setInterval(() => {
      if (document.visibilityState === "visible") setTick((n) => n + 1);
    }, refreshMs);
    return () => clearInterval(timer);
  }, [refreshMs]);
  const reload = useCallback(() => setTick((n) => n + 1), []);
  const fresh = state.key === key;
  return {
    data: fresh ? state.data : undefined,
    error: fresh ? state.error : undefined,
    loading: state.loading || !fresh,
    reload,
  };
}

function messageOf(error: unknown): string {
  if (error instanceof ApiError || error instanceof Error) return error.message;
  return String(error);
}

/** An error as the API worded it, announced to screen readers. */
export function ErrorMessage({ error, title }: { error: unknown; title?: string }) {
  if (error === undefined || error === null) return null;
  const status = error instanceof ApiError && error.status > 0 ? ` (${error.status})` : "";
  return (
    <div class="error" role="alert">
      <strong>
        {title ?? "Something went wrong"}
        {status}:
      </strong>{" "}
      {messageOf(error)}
    </div>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <p class="muted" aria-live="polite">
      Loading {what}…
    </p>
  );
}

export function StatusBadge({ status }: { status: string }) {
  return <span class={`badge status-${status}`}>{status}</span>;
}

/** A modal question (the native dialog: focus kept inside, Escape cancels). */
export function ConfirmDialog(props: {
  open: boolean;
  title: string;
  confirmLabel: string;
  busy?: boolean;
  error?: unknown;
  onConfirm: () => void;
  onCancel: () => void;
  children: ComponentChildren;
}) {
  const dialog = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const element = dialog.current;
    if (element === null) return;
    if (props.open && !element.open) element.showModal();
    if (!props.open && element.open) element.close();
  }, [props.open]);
  return (
    <dialog
      ref={dialog}
      aria-labelledby="confirm-title"
      onCancel={(event) => {
        event.preventDefault();
        props.onCancel();
      }}
    >
      <form
        method="dialog"
        onSubmit={(event) => {
          event.preventDefault();
          props.onConfirm();
        }}
      >
        <h2 id="confirm-title">{props.title}</h2>
        <div>{props.children}</div>
        <ErrorMessage error={props.error} title="Not done" />
        <div class="actions">
          <button type="button" class="secondary" onClick={props.onCancel}>
            Cancel
          </button>
          <button type="submit" disabled={props.busy}>
            {props.busy ? "Working…" : props.confirmLabel}
          </button>
        </div>
      </form>
    </dialog>
  );
}

export interface Bar {
  readonly label: string;
  readonly value: number;
}

/** Scores as horizontal bars, the values written out for those who do not see the bars. */
export function Bars({ bars, caption }: { bars: readonly Bar[]; caption: string }) {
  const max = Math.max(1e-12, ...bars.map((bar) => Math.abs(bar.value)));
  const scale = Math.max(1, max);
  return (
    <figure class="bars">
      <figcaption>{caption}</figcaption>
      <ul>
        {bars.map((bar) => (
          <li key={bar.label}>
            <span class="bar-label">{bar.label}</span>
            <span class="bar-track" aria-hidden="true">
              <span
                class="bar-fill"
                style={{ width: `${Math.max(0, (Math.abs(bar.value) / scale) * 100)}%` }}
              />
            </span>
            <span class="bar-value">{formatNumber(bar.value)}</span>
          </li>
        ))}
      </ul>
    </figure>
  );
}

export function CopyButton({ text, label }: { text: string; label: string }) {
  const [copied, setCopied] = useState(false);
  return (
    <button
      type="button"
      class="secondary small"
      onClick={() =>
        navigator.clipboard.writeText(text).then(
          () => {
            setCopied(true);
            setTimeout(() => setCopied(false), 1500);
          },
          () => setCopied(false),
        )
      }
    >
      <span aria-live="polite">{copied ? "Copied" : label}</span>
    </button>
  );
}
