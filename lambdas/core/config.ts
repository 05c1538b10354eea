import type * as z from "zod";

/**
 * Parses a function's configuration from its environment. A missing or malformed variable fails the
 * cold start with every problem named, instead of surfacing later as an odd runtime error.
 */
export function parseConfig<T extends z.ZodType>(
  schema: T,
  env: Record<string, string | undefined>,
  functionName: string,
): z.infer<T> {
  const result = schema.safeParse(env);
  if (!result.success) {
    const details = result.error.issues
      .map((issue) => `${issue.path.join(".")}: ${issue.message}`)
      .join("; ");
    throw new Error(`invalid ${functionName} function configuration: ${details}`);
  }
  return result.data;
}
