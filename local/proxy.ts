import {
  type Agent,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request,
  type ServerResponse,
} from "node:http";

/** Where a request is streamed to, and what of it and of the answer is not (hop-by-hop headers). */
export interface ProxyTarget {
  readonly host: string;
  readonly port: number | string;
  /** The Host header to send instead of the client's. */
  readonly hostHeader?: string;
  readonly agent?: Agent;
  readonly dropHeaders: ReadonlySet<string>;
}

function kept(headers: IncomingHttpHeaders, drop: ReadonlySet<string>): IncomingHttpHeaders {
  const out: IncomingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !drop.has(name)) out[name] = value;
  }
  return out;
}

/**
 * Streams `req` (or `body`, when the caller has read it already) to `target` and its answer back,
 * as sent but for the dropped headers. Past a failure after the answer began, the response is cut;
 * before it, `unanswered` answers. A client that goes away cancels the upstream request.
 */
export function proxyRequest(
  req: IncomingMessage,
  res: ServerResponse,
  target: ProxyTarget,
  body: Buffer | undefined,
  unanswered: (res: ServerResponse) => void,
): void {
  const headers = kept(req.headers, target.dropHeaders);
  if (target.hostHeader !== undefined) headers.host = target.hostHeader;
  const upstream = request(
    {
      host: target.host,
      port: target.port,
      method: req.method,
      path: req.url,
      headers,
      ...(target.agent === undefined ? {} : { agent: target.agent }),
    },
    (answer) => {
      res.writeHead(answer.statusCode ?? 502, kept(answer.headers, target.dropHeaders));
      answer.pipe(res);
      answer.on("error", () => res.destroy());
    },
  );
  upstream.on("error", () => {
    if (res.headersSent) res.destroy();
    else unanswered(res);
  });
  res.on("close", () => {
    if (!res.writableFinished) upstream.destroy();
  });
  if (body === undefined) req.pipe(upstream);
  else upstream.end(body);
}
