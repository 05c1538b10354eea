import type * as z from "zod/mini";

/** One setting of a function: the variable that carries it and the schema that reads it. */
export type EnvEntry = readonly [variable: string, schema: z.core.$ZodType];
export type EnvEntries = Readonly<Record<string, EnvEntry>>;

type OptionalIn = { readonly _zod: { readonly optin: "optional" | "defaulted" } };
type SettingValue<S extends z.core.$ZodType> = Exclude<z.output<S>, undefined>;

/**
 * What a stack passes for a function's environment, by setting: required where the schema has no
 * default, typed as the function reads it (numbers, flags, enums), written as strings.
 */
export type EnvSettings<E extends EnvEntries> = {
  -readonly [K in keyof E as E[K][1] extends OptionalIn ? never : K]: SettingValue<E[K][1]>;
} & {
  -readonly [K in keyof E as E[K][1] extends OptionalIn ? K : never]?: SettingValue<E[K][1]>;
};

/**
 * A function's environment contract. The function's config schema, the CDK stack and the local stack
 * all take the variable names from it, so a variable cannot be renamed (or a required one left out)
 * in one place only: the build fails.
 */
export interface EnvContract<E extends EnvEntries> {
  /** Each setting's variable name. */
  readonly names: { readonly [K in keyof E]: E[K][0] };
  /** The schema shape keyed by variable name, for `z.object`. */
  readonly shape: { -readonly [K in keyof E as E[K][0]]: E[K][1] };
  /** The environment record a stack gives the function; unset settings are left out. */
  environment(settings: EnvSettings<E>): Record<string, string>;
  /** The contract's variables that are set in `env`, except those of the settings named. */
  pick(
    env: Readonly<Record<string, string | undefined>>,
    except?: readonly (keyof E)[],
  ): Record<string, string>;
}

export function defineEnv<const E extends EnvEntries>(entries: E): EnvContract<E> {
  const settings = Object.entries(entries);
  return {
    names: Object.fromEntries(
      settings.map(([setting, [variable]]) => [setting, variable]),
    ) as EnvContract<E>["names"],
    shape: Object.fromEntries(
      settings.map(([, [variable, schema]]) => [variable, schema]),
    ) as EnvContract<E>["shape"],
    environment(values) {
      const environment: Record<string, string> = {};
      for (const [setting, value] of Object.entries(values as Record<string, unknown>)) {
        const entry = entries[setting];
        if (entry === undefined) throw new Error(`${setting} is not a setting of this function`);
        if (value !== undefined) environment[entry[0]] = String(value);
      }
      return environment;
    },
    pick(env, except = []) {
      const picked: Record<string, string> = {};
      for (const [setting, [variable]] of settings) {
        const value = env[variable];
        if (value !== undefined && !except.includes(setting)) picked[variable] = value;
      }
      return picked;
    },
  };
}
