/** Entry: reads config.json (which auth this deployment uses), then renders the console. */
import { render } from "preact";
import "uplot/dist/uPlot.min.css";
import "./styles.css";
import { App } from "./app.tsx";
import { createAuth } from "./auth.ts";
import { configSchema } from "./schemas.ts";

async function start(root: HTMLElement): Promise<void> {
  const response = await fetch("config.json", { cache: "no-cache" });
  if (!response.ok) throw new Error(`config.json could not be read (${response.status})`);
  const parsed = configSchema.safeParse(await response.json());
  if (!parsed.success)
    throw new Error('config.json must be {"auth":"key"} or {"auth":"sigv4","region":"<region>"}');
  render(<App auth={createAuth(parsed.data)} />, root);
}

const root = document.getElementById("app")!;
start(root).catch((error: unknown) => {
  const message = document.createElement("p");
  message.className = "error";
  message.setAttribute("role", "alert");
  message.textContent = `The console could not start: ${error instanceof Error ? error.message : String(error)}`;
  root.replaceChildren(message);
});
