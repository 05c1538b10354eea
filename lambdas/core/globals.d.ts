// JSON.rawJSON ships in Node 22 (V8 11.4+); TypeScript's lib does not declare it yet.
interface JSON {
  rawJSON(text: string): unknown;
}
