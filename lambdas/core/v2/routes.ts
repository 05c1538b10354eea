import { MethodNotAllowedError, ModelNotFoundError, RouteNotFoundError } from "#core/errors.ts";
import { MODEL_NAME_PATTERN } from "#core/model.ts";

/** The V2 routes this service answers; `version` is a number or an alias when present. */
export type V2Route =
  | { readonly kind: "server-metadata" }
  | { readonly kind: "live" }
  | { readonly kind: "ready" }
  | { readonly kind: "list-models" }
  | { readonly kind: "model-metadata"; readonly model: string; readonly version?: string }
  | { readonly kind: "model-ready"; readonly model: string; readonly version?: string }
  | { readonly kind: "infer"; readonly model: string; readonly version?: string }
  /** The statistics extension: every model's, one model's (every version), or one version's. */
  | { readonly kind: "stats"; readonly model?: string; readonly version?: string }
  | { readonly kind: "upload" }
  | { readonly kind: "job"; readonly id: string }
  /** OpenAI's embeddings API, for feature-extraction models. */
  | { readonly kind: "openai-embeddings" }
  | { readonly kind: "openai-models" };

const FIXED: Record<string, { method: string; route: V2Route }> = {
  "/v2": { method: "GET", route: { kind: "server-metadata" } },
  "/v2/health/live": { method: "GET", route: { kind: "live" } },
  "/v2/health/ready": { method: "GET", route: { kind: "ready" } },
  "/v2/models": { method: "GET", route: { kind: "list-models" } },
  // As Triton has it: this shadows the metadata of a model named "stats" (its other routes still work).
  "/v2/models/stats": { method: "GET", route: { kind: "stats" } },
  "/v2/uploads": { method: "POST", route: { kind: "upload" } },
  "/v1/embeddings": { method: "POST", route: { kind: "openai-embeddings" } },
  "/v1/models": { method: "GET", route: { kind: "openai-models" } },
};

const JOB_PATH = /^\/v2\/jobs\/([^/]+)$/;

const MODEL_PATH = /^\/v2\/models\/([^/]+)(?:\/versions\/([^/]+))?(?:\/(ready|infer|stats))?$/;

interface PathMatch {
  readonly path: string;
  readonly method: string;
  readonly route: V2Route;
}

/** Paths matched lately: a warm request skips the patterns, which cost more than their work after a model's run. */
const recentMatches = new Map<string, PathMatch>();
const RECENT_MATCHES = 256;

/** Matches a request to a V2 route; 404 for an unknown path, 405 for a known path and wrong method. */
export function matchV2Route(method: string, rawPath: string): V2Route {
  let match = recentMatches.get(rawPath);
  if (match === undefined) {
    match = matchPath(method, rawPath);
    if (recentMatches.size >= RECENT_MATCHES)
      recentMatches.delete(recentMatches.keys().next().value as string);
    recentMatches.set(rawPath, match);
  }
  if (method !== match.method && !(method === "HEAD" && match.method === "GET")) {
    throw new MethodNotAllowedError(method, match.path, [match.method]);
  }
  return match.route;
}

/** The route a path names and the method it takes; throws for a path that names none. */
function matchPath(method: string, rawPath: string): PathMatch {
  const path = rawPath.length > 1 && rawPath.endsWith("/") ? rawPath.slice(0, -1) : rawPath;
  const fixed = FIXED[path];
  if (fixed !== undefined) return { path, ...fixed };
  const job = JOB_PATH.exec(path);
  if (job !== null) return { path, method: "GET", route: { kind: "job", id: safeDecode(job[1] as string) } };
  const match = MODEL_PATH.exec(path);
  if (match === null) throw new RouteNotFoundError(method, path);
  const [, rawModel = "", rawVersion, action] = match;
  const model = safeDecode(rawModel);
  if (!MODEL_NAME_PATTERN.test(model)) {
    throw new ModelNotFoundError(
      `model '${model}' not found: names are 1-64 lower-case letters, digits, '-', '_' or '.'`,
    );
  }
  const version = rawVersion === undefined ? undefined : safeDecode(rawVersion);
  if (action === "infer") return { path, method: "POST", route: { kind: "infer", model, version } };
  if (action === "ready") return { path, method: "GET", route: { kind: "model-ready", model, version } };
  if (action === "stats") return { path, method: "GET", route: { kind: "stats", model, version } };
  return { path, method: "GET", route: { kind: "model-metadata", model, version } };
}

/** A malformed escape is left as is: it then fails the name checks (a 404 or 400), not a 500. */
export function safeDecode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}
