import * as z from "zod";
import { parseConfig } from "#core/config.ts";
import { defineEnv } from "#core/env-contract.ts";

/** The admin function's environment: each setting, its variable and how the function reads it. */
export const ADMIN_ENV = defineEnv({
  registryTable: ["MAAS_REGISTRY_TABLE", z.string().min(1)],
  /** Deleting a version removes its upload from here. */
  bucket: ["MAAS_BUCKET", z.string().min(1)],
});

/** The environment a stack gives the admin function. */
export const adminEnvironment = ADMIN_ENV.environment;

export const adminConfigSchema = z.object(ADMIN_ENV.shape);
export type AdminConfig = z.infer<typeof adminConfigSchema>;

export function loadAdminConfig(env: Record<string, string | undefined>): AdminConfig {
  return parseConfig(adminConfigSchema, env, "admin");
}
