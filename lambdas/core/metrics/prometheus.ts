/**
 * Prometheus text exposition format 0.0.4 (prometheus.io/docs/instrumenting/exposition_formats): a
 * `# HELP` and a `# TYPE` line per family, then one `name{labels} value` line per sample. Only counters
 * that InferenceStatistics already keeps are rendered: prom-client (not a dependency) would keep a
 * second copy of them in its own registry.
 */

export interface PrometheusSample {
  /** Rendered label pairs without braces (`model="iris",version="1"`); empty for none. */
  readonly labels: string;
  readonly value: number;
}

export interface PrometheusFamily {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "gauge";
  readonly samples: readonly PrometheusSample[];
}

/** The exposition's content type. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

export function renderPrometheus(families: readonly PrometheusFamily[]): string {
  const lines: string[] = [];
  for (const family of families) {
    lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`, `# TYPE ${family.name} ${family.type}`);
    for (const { labels, value } of family.samples)
      lines.push(labels.length === 0 ? `${family.name} ${value}` : `${family.name}{${labels}} ${value}`);
  }
  return `${lines.join("\n")}\n`;
}

/** A label value as the exposition format quotes it: backslash, double quote and newline escaped. */
export function escapeLabel(value: string): string {
  return value.replace(/[\\"\n]/g, (char) => (char === "\n" ? "\\n" : `\\${char}`));
}

function escapeHelp(help: string): string {
  return help.replace(/[\\\n]/g, (char) => (char === "\n" ? "\\n" : "\\\\"));
}
