/**
 * How the console proves who it is. Two implementations behind one interface, picked by config.json:
 * - "key" (local stack): the admin key opens /admin, the API key the inference routes (x-api-key);
 * - "sigv4" (AWS): /admin calls are signed with temporary credentials the operator pastes (STS, ASIA...),
 *   the inference routes take the API key.
 * What the operator types is kept in sessionStorage only: gone when the tab closes.
 */
import * as z from "zod/mini";
import type { ConsoleConfig } from "./schemas.ts";

/** Which part of the API a call goes to: each has its own credential. */
export type Scope = "admin" | "inference";

export interface Auth {
  readonly mode: ConsoleConfig["auth"];
  signedIn(): boolean;
  /** Keeps credentials for this tab; throws a CredentialsError the form shows when they cannot be used. */
  signIn(fields: Readonly<Record<string, string>>): void;
  signOut(): void;
  fetch(scope: Scope, url: string, init?: RequestInit): Promise<Response>;
  /** What the sign-in form asks for in this mode. */
  readonly fields: readonly CredentialField[];
}

export interface CredentialField {
  readonly name: string;
  readonly label: string;
  readonly hint: string;
  readonly secret: boolean;
  /** The form may leave it empty (a default applies). */
  readonly optional?: boolean;
}

export class CredentialsError extends Error {
  readonly status = 400;
  constructor(message: string) {
    super(message);
    this.name = "CredentialsError";
  }
}

const STORAGE_KEY = "maas.console.credentials";

const keyCredentials = z.object({ adminKey: z.string().check(z.minLength(1)), apiKey: z.string() });
const sigv4Credentials = z.object({
  accessKeyId: z.string(),
  secretAccessKey: z.string(),
  sessionToken: z.string(),
  region: z.string(),
  apiKey: z.string(),
});

function load<T>(schema: z.ZodMiniType<T>): T | undefined {
  const text = sessionStorage.getItem(STORAGE_KEY);
  if (text === null) return undefined;
  try {
    const parsed = schema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

function withHeader(init: RequestInit | undefined, name: string, value: string): RequestInit {
  const headers = new Headers(init?.headers);
  headers.set(name, value);
  return { ...init, headers };
}

const API_KEY_FIELD: CredentialField = {
  name: "apiKey",
  label: "API key",
  hint: "Opens the inference routes (try it). `npm start` prints it.",
  secret: true,
};

/** The local stack's keys: x-api-key on every call, the admin key for /admin and the API key for the rest. */
function keyAuth(): Auth {
  let saved = load(keyCredentials);
  return {
    mode: "key",
    fields: [
      {
        name: "adminKey",
        label: "Admin key",
        hint: "Opens the admin API: models, versions, aliases, publishing. `npm start` prints it.",
        secret: true,
      },
      API_KEY_FIELD,
    ],
    signedIn: () => saved !== undefined,
    signIn(fields) {
      const adminKey = fields.adminKey?.trim() ?? "";
      const apiKey = fields.apiKey?.trim() ?? "";
      if (adminKey === "") throw new CredentialsError("Enter the admin key.");
      if (apiKey === "") throw new CredentialsError("Enter the API key.");
      if (adminKey === apiKey) {
        throw new CredentialsError(
          "The admin key and the API key are different keys: enter each in its field.",
        );
      }
      saved = { adminKey, apiKey };
      sessionStorage.setItem(STORAGE_KEY, JSON.stringify(saved));
    },
    signOut() {
      saved = undefined;
      sessionStorage.removeItem(STORAGE_KEY);
    },
    fetch(scope, url, init) {
      if (saved === undefined) return Promise.reject(new CredentialsError("Sign in first."));
      return fetch(url, withHeader(init, "x-api-key", scope === "admin" ? saved.adminKey : saved.apiKey));
    },
  };
}

/** Long-lived IAM user keys start AKIA; temporary ones (STS, SSO, roles) ASIA. */
const TEMPORARY_KEY_ID = /^ASIA[A-Z0-9]{12,124}$/;

/**
 * AWS: /admin signed with SigV4 (service execute-api) from temporary credentials, as
 * `aws configure export-credentials` prints them; long-lived keys are refused.
 */
function sigv4Auth(defaultRegion: string): Auth {
  let saved = load(sigv4Credentials);
  // aws4fetch loads only in this mode, on the first signed call.
  let client: Promise<{ fetch: (url: string, init?: RequestInit) => Promise<Response> }> | undefined;
  return {
    mode: "sigv4",
    fields: [
      {
        name: "accessKeyId",
        label: "Access key id",
        hint: "Temporary credentials only (starting ASIA): `aws configure export-credentials`.",
        secret: false,
      },
      { name: "secretAccessKey", label: "Secret access key", hint: "", secret: true },
      { name: "sessionToken", label: "Session token", hint: "", secret: true },
      {
        name: "region",
        label: "Region",
        hint: `The API's region (${defaultRegion}).`,
        secret: false,
        optional: true,
      },
      API_KEY_FIELD,
    ],
    signedIn: () => saved !== undefined,
    signIn(fields) {
      const value = (name: string) => fields[name]?.trim() ?? "";
      const accessKeyId = value("accessKeyId");
      if (accessKeyId.startsWith("AKIA")) {
        throw new CredentialsError(
          "This is a long-lived access key (AKIA...). Paste temporary credentials (ASIA...) from `aws configure export-credentials` or STS: the console keeps no long-lived keys.",
        );
      }
      if (!TEMPORARY_KEY_ID.test(accessKeyId)) {
        throw new CredentialsError("The access key id of temporary credentials starts with ASIA.");
      }
      if (value("secretAccessKey") === "") throw new CredentialsError("Enter the secret access key.");
      if (value("sessionToken") === "") {
        throw new CredentialsError("Temporary credentials come with a session token: enter it.");
      }
      if (value("apiKey") === "") throw new CredentialsError("Enter the API key.");
      saved = {
        accessKeyId,
        secretAccessKey: value("secretAccessKey"),
        sessionToken: value("sessionToken"),
        region: value("region") || defaultRegion,
        apiKey: value("apiKey"),
      };
      client = undefined;
      sessionStorage.setItem(STORAGE_KEY, JSON.stringify(saved));
    },
    signOut() {
      saved = undefined;
      client = undefined;
      sessionStorage.removeItem(STORAGE_KEY);
    },
    async fetch(scope, url, init) {
      const credentials = saved;
      if (credentials === undefined) throw new CredentialsError("Sign in first.");
      if (scope === "inference") return fetch(url, withHeader(init, "x-api-key", credentials.apiKey));
      client ??= import("aws4fetch").then(
        ({ AwsClient }) =>
          new AwsClient({
            accessKeyId: credentials.accessKeyId,
            secretAccessKey: credentials.secretAccessKey,
            sessionToken: credentials.sessionToken,
            region: credentials.region,
            service: "execute-api",
          }),
      );
      return (await client).fetch(url, init);
    },
  };
}

export function createAuth(config: ConsoleConfig): Auth {
  return config.auth === "key" ? keyAuth() : sigv4Auth(config.region);
}
