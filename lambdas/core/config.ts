import * as z from "zod/mini";

/**
 * Parses a function's configuration from its environment. A missing or malformed variable fails the
 * cold start with every problem named, instead of surfacing later as an odd runtime error.
 */
export function parseConfig<T extends z.core.$ZodType>(
  schema: T,
  env: Record<string, string | undefined>,
  functionName: string,
): z.output<T> {
  const result = z.safeParse(schema, env);
  if (!result.success) {
    const details = result.error.issues
      .map((issue) => `${issue.path.join(".")}: ${issue.message}`)
      .join("; ");
    throw new Error(`invalid ${functionName} function configuration: ${details}`);
  }
  return result.data;
}
