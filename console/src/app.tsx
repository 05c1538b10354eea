/** The console's shell: sign-in, navigation, and the view the hash names. */
import { useEffect, useMemo, useState } from "preact/hooks";
import { Api } from "./api.ts";
import type { Auth } from "./auth.ts";
import { href, useRoute } from "./router.ts";
import { ModelView } from "./views/model.tsx";
import { ModelsView } from "./views/models.tsx";
import { PublishView } from "./views/publish.tsx";
import { SignIn } from "./views/sign-in.tsx";

/** Marked once the first view is on screen and answers input: what bench/console.ts measures. */
export const INTERACTIVE_MARK = "console-interactive";

export function App({ auth }: { auth: Auth }) {
  const [signedIn, setSignedIn] = useState(auth.signedIn());
  const route = useRoute();
  const api = useMemo(() => new Api(auth), [auth]);
  useEffect(() => {
    performance.mark(INTERACTIVE_MARK);
    document.documentElement.dataset.ready = "true";
  }, []);
  // A new page (not a tab or version of the same model) starts at its top, focus on its content.
  const page = route.view === "model" ? `model/${route.model}` : route.view;
  const [firstPage] = useState(page);
  useEffect(() => {
    if (page === firstPage) return;
    document.getElementById("content")?.focus({ preventScroll: true });
    scrollTo(0, 0);
  }, [page, firstPage]);

  return (
    <>
      <a class="skip" href="#content">
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href={href({ view: "models" })}>
          serverless-maas <span>console</span>
        </a>
        {signedIn && (
          <nav aria-label="Main">
            <a
              href={href({ view: "models" })}
              aria-current={route.view === "models" || route.view === "model" ? "page" : undefined}
            >
              Models
            </a>
            <a href={href({ view: "publish" })} aria-current={route.view === "publish" ? "page" : undefined}>
              Publish
            </a>
            <button
              type="button"
              class="secondary small"
              onClick={() => {
                auth.signOut();
                setSignedIn(false);
              }}
            >
              Sign out
            </button>
          </nav>
        )}
      </header>
      <main id="content" tabIndex={-1}>
        {!signedIn ? (
          <SignIn auth={auth} onSignedIn={() => setSignedIn(true)} />
        ) : route.view === "models" ? (
          <ModelsView api={api} />
        ) : route.view === "model" ? (
          <ModelView
            key={route.model}
            api={api}
            model={route.model}
            tab={route.tab}
            {...(route.version === undefined ? {} : { version: route.version })}
          />
        ) : route.view === "publish" ? (
          <PublishView
            key={route.model ?? ""}
            api={api}
            {...(route.model === undefined ? {} : { model: route.model })}
          />
        ) : (
          <section>
            <h1>Not found</h1>
            <p>
              Nothing lives at <code>{route.hash}</code>.{" "}
              <a href={href({ view: "models" })}>Back to the models</a>.
            </p>
          </section>
        )}
      </main>
    </>
  );
}
