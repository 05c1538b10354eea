/** Hash routes, so the console is a set of static files any host can serve: `#/models/iris/versions/2/try`. */
import { useEffect, useState } from "preact/hooks";

export type ModelTab = "overview" | "try" | "figures";

export type Route =
  | { readonly view: "models" }
  | { readonly view: "model"; readonly model: string; readonly version?: number; readonly tab: ModelTab }
  | { readonly view: "publish"; readonly model?: string }
  | { readonly view: "not-found"; readonly hash: string };

const TABS: readonly ModelTab[] = ["overview", "try", "figures"];

function parseRoute(hash: string): Route {
  const parts = hash
    .replace(/^#\/?/, "")
    .split("/")
    .filter((part) => part !== "")
    .map((part) => decodeURIComponent(part));
  const [first, model, ...rest] = parts;
  if (first === undefined || (first === "models" && model === undefined)) return { view: "models" };
  if (first === "publish") return model === undefined ? { view: "publish" } : { view: "publish", model };
  if (first === "models" && model !== undefined) {
    let version: number | undefined;
    let tail = rest;
    if (tail[0] === "versions" && tail[1] !== undefined && /^\d+$/.test(tail[1])) {
      version = Number(tail[1]);
      tail = tail.slice(2);
    }
    const tab = (tail[0] ?? "overview") as ModelTab;
    if (TABS.includes(tab) && tail.length <= 1) {
      return version === undefined ? { view: "model", model, tab } : { view: "model", model, version, tab };
    }
  }
  return { view: "not-found", hash };
}

export function href(route: Route): string {
  switch (route.view) {
    case "models":
      return "#/models";
    case "publish":
      return route.model === undefined ? "#/publish" : `#/publish/${encodeURIComponent(route.model)}`;
    case "model": {
      const version = route.version === undefined ? "" : `/versions/${route.version}`;
      const tab = route.tab === "overview" ? "" : `/${route.tab}`;
      return `#/models/${encodeURIComponent(route.model)}${version}${tab}`;
    }
    case "not-found":
      return route.hash;
  }
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const onChange = () => setRoute(parseRoute(location.hash));
    addEventListener("hashchange", onChange);
    return () => removeEventListener("hashchange", onChange);
  }, []);
  return route;
}

export function navigate(route: Route): void {
  location.hash = href(route);
}
