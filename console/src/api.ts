/** The public and admin APIs as the console calls them: same origin, relative to the console's folder. */
import type * as z from "zod/mini";
import type { Auth, Scope } from "./auth.ts";
import {
  aliasesSchema,
  aliasSchema,
  errorBodySchema,
  figuresSchema,
  type InferResponse,
  inferResponseSchema,
  metadataSchema,
  modelsSchema,
  uploadsSchema,
  versionSchema,
  versionsSchema,
} from "./schemas.ts";

/** An API call that did not succeed: the API's own message and status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

/** The message a failed response carries (`{"error": "..."}` and its relatives), else its status. */
async function errorFrom(response: Response): Promise<ApiError> {
  const text = await response.text().catch(() => "");
  let message = text.trim();
  try {
    const parsed = errorBodySchema.safeParse(JSON.parse(text));
    if (parsed.success) {
      const body = parsed.data;
      message =
        "message" in body ? body.message : typeof body.error === "string" ? body.error : body.error.message;
    }
  } catch {
    // Not JSON: S3's XML or plain text, shown as it came.
  }
  if (response.status === 403 && message === "Forbidden") {
    message = "Forbidden: the key was refused. Sign out and check the key for this part of the API.";
  }
  return new ApiError(response.status, message || `${response.status} ${response.statusText}`);
}

export interface InferResult {
  readonly response: InferResponse;
  /** From sending the request to its body parsed, in the browser. */
  readonly latencyMs: number;
  readonly backend: string | null;
  readonly version: string | null;
  readonly variant: string | null;
}

const path = (...segments: (string | number)[]) => segments.map((s) => encodeURIComponent(s)).join("/");

export class Api {
  /** The API's root: the console is served at `<root>console/`, locally and behind API Gateway's stage. */
  readonly base: URL;

  constructor(
    private readonly auth: Auth,
    base = new URL("../", location.href),
  ) {
    this.base = base;
  }

  url(relative: string): string {
    return new URL(relative, this.base).toString();
  }

  async #json<T>(scope: Scope, schema: z.ZodMiniType<T>, relative: string, init?: RequestInit): Promise<T> {
    const response = await this.auth.fetch(scope, this.url(relative), init);
    if (!response.ok) throw await errorFrom(response);
    const parsed = schema.safeParse(await response.json());
    if (!parsed.success) {
      throw new ApiError(response.status, `The API answered ${relative} in an unexpected shape.`);
    }
    return parsed.data;
  }

  #send(body: unknown, method = "PUT"): RequestInit {
    return {
      method,
      headers: { "content-type": "application/json" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    };
  }

  models() {
    return this.#json("admin", modelsSchema, "admin/models");
  }

  versions(model: string) {
    return this.#json("admin", versionsSchema, `admin/models/${path(model)}/versions`);
  }

  version(model: string, version: number) {
    return this.#json("admin", versionSchema, `admin/models/${path(model, "versions", version)}`);
  }

  aliases(model: string) {
    return this.#json("admin", aliasesSchema, `admin/models/${path(model)}/aliases`);
  }

  moveAlias(model: string, alias: string, version: number) {
    return this.#json(
      "admin",
      aliasSchema,
      `admin/models/${path(model, "aliases", alias)}`,
      this.#send({ version }),
    );
  }

  rollback(model: string, alias: string) {
    return this.#json(
      "admin",
      aliasSchema,
      `admin/models/${path(model, "aliases", alias, "rollback")}`,
      this.#send(undefined, "POST"),
    );
  }

  chooseVariant(model: string, version: number, kind: string) {
    return this.#json(
      "admin",
      versionSchema,
      `admin/models/${path(model, "versions", version, "variant")}`,
      this.#send({ kind }),
    );
  }

  figures(model: string, minutes: number) {
    return this.#json("admin", figuresSchema, `admin/models/${path(model)}/figures?minutes=${minutes}`);
  }

  uploads(model: string, version: number, files: readonly (string | { name: string; parts: number })[]) {
    return this.#json(
      "admin",
      uploadsSchema,
      `admin/models/${path(model, "versions", version, "uploads")}`,
      this.#send({ files }, "POST"),
    );
  }

  metadata(model: string, version: number) {
    return this.#json("inference", metadataSchema, `v2/models/${path(model, "versions", version)}`);
  }

  async infer(model: string, version: number, body: unknown): Promise<InferResult> {
    const started = performance.now();
    const response = await this.auth.fetch(
      "inference",
      this.url(this.inferPath(model, version)),
      this.#send(body, "POST"),
    );
    if (!response.ok) throw await errorFrom(response);
    const parsed = inferResponseSchema.safeParse(await response.json());
    const latencyMs = performance.now() - started;
    if (!parsed.success) throw new ApiError(response.status, "The infer response has an unexpected shape.");
    return {
      response: parsed.data,
      latencyMs,
      backend: response.headers.get("x-maas-backend"),
      version: response.headers.get("x-maas-model-version"),
      variant: response.headers.get("x-maas-variant"),
    };
  }

  inferPath(model: string, version: number): string {
    return `v2/models/${path(model, "versions", version)}/infer`;
  }
}
