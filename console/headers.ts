/**
 * The headers the console is served with, locally by the gateway and in AWS by API Gateway from S3: its
 * scripts, styles and API calls from its own origin only (the try-it panel's images are local blobs and
 * data URLs), never framed, no base or form targets.
 */

/** The Content-Security-Policy, with `connectOrigins` added to connect-src (in AWS, the upload bucket's). */
export function consoleCsp(connectOrigins: readonly string[] = []): string {
  const connect = ["'self'", ...connectOrigins].join(" ");
  return `default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src ${connect}; frame-ancestors 'none'; base-uri 'none'; form-action 'none'`;
}

/** The other security headers, the same everywhere. */
export const CONSOLE_HEADERS = {
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "no-referrer",
} as const;
