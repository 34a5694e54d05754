// The dashboard's shell: sign-in, navigation (each page has its own address, so reload and back
// work) and the page the address names.
import { forget, onSignedOut, remember, request, storedKey } from "./api.js";
import { html, render, useEffect, useState } from "./html.js";
import { KeysPage } from "./keys.js";
import { AuditLogPage, OverviewPage, PolicyPage } from "./pages.js";
import { UsagePage } from "./usage.js";
import { WebhooksPage } from "./webhooks.js";

const PAGES = [
  { path: "overview", title: "Overview", view: OverviewPage },
  { path: "keys", title: "Keys", view: KeysPage },
  { path: "usage", title: "Usage", view: UsagePage },
  { path: "policy", title: "Policy", view: PolicyPage },
  { path: "webhooks", title: "Webhooks", view: WebhooksPage },
  { path: "audit-log", title: "Audit log", view: AuditLogPage },
];

function currentPath() {
  return location.pathname.replace(/^\/dashboard\/?/, "") || "overview";
}

export function navigate(path) {
  history.pushState(null, "", `/dashboard/${path}`);
  dispatchEvent(new PopStateEvent("popstate"));
}

function SignIn({ reason }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState(reason);
  const [busy, setBusy] = useState(false);
  async function submit(event) {
    event.preventDefault();
    setBusy(true);
    try {
      // A cheap operation checks the key before it is kept.
      await request("OrganizationOverview", {}, key);
      remember(key.trim());
      navigate(currentPath() === "sign-in" ? "overview" : currentPath());
    } catch (failure) {
      setError(failure.explain ? failure.explain() : String(failure));
    } finally {
      setBusy(false);
    }
  }
  return html`<main class="sign-in">
    <h1>keyhouse</h1>
    <form onSubmit=${submit}>
      <label for="api-key">API key</label>
      <input id="api-key" type="password" autocomplete="off" spellcheck="false"
        value=${key} onInput=${(e) => setKey(e.target.value)} required />
      <p class="help">Paste a key of your organization (kh_…). It stays in this tab only.</p>
      ${error && html`<p class="error" role="alert">${error}</p>`}
      <button type="submit" disabled=${busy}>Sign in</button>
    </form>
  </main>`;
}

function Shell({ path }) {
  const page = PAGES.find((each) => each.path === path) || PAGES[0];
  useEffect(() => {
    document.title = `${page.title} · keyhouse`;
  }, [page]);
  function follow(event, target) {
    event.preventDefault();
    navigate(target);
  }
  function signOut() {
    forget();
    navigate("sign-in");
  }
  return html`<div class="shell">
    <header>
      <span class="brand">keyhouse</span>
      <nav aria-label="Dashboard">
        ${PAGES.map((each) => html`<a href="/dashboard/${each.path}"
          aria-current=${each === page ? "page" : undefined}
          onClick=${(e) => follow(e, each.path)}>${each.title}</a>`)}
        <a href="/graphql">GraphiQL</a>
      </nav>
      <button type="button" class="secondary" onClick=${signOut}>Sign out</button>
    </header>
    <main><h1>${page.title}</h1><${page.view} /></main>
  </div>`;
}

function App() {
  // An object, so that navigating to the same address (after signing in) draws again.
  const [route, setRoute] = useState({ path: currentPath() });
  const [reason, setReason] = useState(null);
  const path = route.path;
  useEffect(() => {
    const follow = () => setRoute({ path: currentPath() });
    addEventListener("popstate", follow);
    // A 401 while signed in (a revoked or expired key) returns to sign-in with the reason.
    onSignedOut((why) => {
      setReason(why);
      navigate("sign-in");
    });
    return () => removeEventListener("popstate", follow);
  }, []);
  if (!storedKey() || path === "sign-in") return html`<${SignIn} reason=${reason} />`;
  return html`<${Shell} path=${path} />`;
}

const root = document.getElementById("app");
root.textContent = ""; // the "Loading" text of the page, drawn before this script ran
render(html`<${App} />`, root);
