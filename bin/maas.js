#!/usr/bin/env node
// `npx maas`: the CLI is TypeScript; tsx loads it without a build step.
import { register } from "tsx/esm/api";

register();
await import("./maas.ts");
