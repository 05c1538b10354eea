// JSON.rawJSON ships in Node 22 (V8 11.4+); TypeScript's lib does not declare it yet.
interface JSON {
  rawJSON(text: string): unknown;
}

// WebAssembly is a V8 global in Node; TypeScript declares it only in the DOM lib. The part used here.
declare namespace WebAssembly {
  class Module {
    constructor(bytes: Uint8Array);
  }
  class Instance {
    constructor(module: Module, imports?: Record<string, Record<string, unknown>>);
    readonly exports: Record<string, unknown>;
  }
  class Memory {
    readonly buffer: ArrayBuffer;
  }
  class Global {
    value: unknown;
  }
}
