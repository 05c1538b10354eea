import { expect, vi } from "vitest";

/** The EMF documents `record` wrote to stdout, one JSON object a line; nothing may be written to stderr. */
export function emitted(record: () => void): Record<string, unknown>[] {
  const lines: string[] = [];
  const warnings: string[] = [];
  vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  });
  vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
    warnings.push(String(chunk));
    return true;
  });
  try {
    record();
  } finally {
    vi.restoreAllMocks();
  }
  expect(warnings).toEqual([]);
  return lines
    .join("")
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

type Directive = { Namespace: string; Dimensions: string[][]; Metrics: unknown[] };

/** An EMF document's directives (`_aws.CloudWatchMetrics`): namespace, dimension sets and metric definitions. */
export function directives(document: Record<string, unknown>): Directive[] {
  return (document._aws as { CloudWatchMetrics: Directive[] }).CloudWatchMetrics;
}

/** An EMF document's `_aws.CloudWatchMetrics[0]`: its namespace, dimension sets and metric definitions. */
export function directive(document: Record<string, unknown>) {
  return (
    document._aws as {
      CloudWatchMetrics: { Namespace: string; Dimensions: string[][]; Metrics: unknown[] }[];
    }
  ).CloudWatchMetrics[0] as { Namespace: string; Dimensions: string[][]; Metrics: unknown[] };
}

/** A Prometheus scrape's samples: `name{labels}` to value. */
export function parsePrometheus(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (match === null) throw new Error(`not a Prometheus sample: ${line}`);
    samples.set(`${match[1]}${match[2] ?? ""}`, Number(match[3]));
  }
  return samples;
}
