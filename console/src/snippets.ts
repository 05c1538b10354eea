/** Ready-to-run calls of a version, filled in with its URL and a request; the key is read from the environment. */

export interface SnippetInput {
  /** The infer route's absolute URL. */
  readonly url: string;
  readonly body: unknown;
}

export type SnippetLanguage = "curl" | "python" | "javascript";
export const SNIPPET_LANGUAGES: readonly { id: SnippetLanguage; label: string }[] = [
  { id: "curl", label: "curl" },
  { id: "python", label: "Python" },
  { id: "javascript", label: "JavaScript" },
];

export function snippet(language: SnippetLanguage, { url, body }: SnippetInput): string {
  const json = JSON.stringify(body);
  switch (language) {
    case "curl":
      return [
        `curl -s ${url} \\`,
        `  -H "x-api-key: $MAAS_API_KEY" -H 'content-type: application/json' \\`,
        `  -d '${json.replaceAll("'", "'\\''")}'`,
      ].join("\n");
    case "python":
      return [
        "import os, requests",
        "",
        "response = requests.post(",
        `    ${JSON.stringify(url)},`,
        '    headers={"x-api-key": os.environ["MAAS_API_KEY"]},',
        `    json=${pythonLiteral(body)},`,
        "    timeout=30,",
        ")",
        "response.raise_for_status()",
        'print(response.headers["x-maas-variant"], response.json()["outputs"])',
      ].join("\n");
    case "javascript":
      return [
        `const response = await fetch(${JSON.stringify(url)}, {`,
        '  method: "POST",',
        '  headers: { "x-api-key": process.env.MAAS_API_KEY, "content-type": "application/json" },',
        `  body: JSON.stringify(${json}),`,
        "});",
        "if (!response.ok) throw new Error((await response.json()).error);",
        'console.log(response.headers.get("x-maas-variant"), (await response.json()).outputs);',
      ].join("\n");
  }
}

/** JSON as a Python literal: the same text, with Python's spelling of true, false and null. */
function pythonLiteral(value: unknown): string {
  return JSON.stringify(value).replace(
    /("(?:[^"\\]|\\.)*")|\btrue\b|\bfalse\b|\bnull\b/g,
    (match, quoted: string | undefined) => {
      if (quoted !== undefined) return quoted;
      return match === "true" ? "True" : match === "false" ? "False" : "None";
    },
  );
}
