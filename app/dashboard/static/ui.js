// Small pieces every page uses: loading an operation's answer, errors, times, dialogs.
import { request } from "./api.js";
import { html, useCallback, useEffect, useRef, useState } from "./html.js";

// The answer of `operation` with `variables`, again whenever they change or `reload()` is called.
export function useOperation(operation, variables) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const serialized = JSON.stringify(variables || {});
  const [version, setVersion] = useState(0);
  useEffect(() => {
    let current = true;
    setState((previous) => ({ ...previous, loading: true }));
    request(operation, JSON.parse(serialized)).then(
      (data) => current && setState({ data, error: null, loading: false }),
      (error) => current && setState({ data: null, error, loading: false }),
    );
    return () => {
      current = false;
    };
  }, [operation, serialized, version]);
  const reload = useCallback(() => setVersion((n) => n + 1), []);
  return { ...state, reload, setData: (data) => setState({ ...state, data }) };
}

export function Failure({ error }) {
  if (!error) return null;
  const text = error.explain ? error.explain() : String(error);
  return html`<p class="error" role="alert">${text}</p>`;
}

export function Loading({ state, children }) {
  if (state.error) return html`<${Failure} error=${state.error} />`;
  if (!state.data) return html`<p class="loading" aria-busy="true">Loading…</p>`;
  return children;
}

const UNITS = [
  ["year", 365 * 86400],
  ["month", 30 * 86400],
  ["day", 86400],
  ["hour", 3600],
  ["minute", 60],
  ["second", 1],
];
const relative = new Intl.RelativeTimeFormat("en", { numeric: "auto" });

export function RelativeTime({ value, empty = "never" }) {
  if (!value) return html`<span class="muted">${empty}</span>`;
  const seconds = (new Date(value) - Date.now()) / 1000;
  const [unit, size] = UNITS.find(([, size]) => Math.abs(seconds) >= size) || UNITS[5];
  const exact = new Date(value).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  return html`<time datetime=${value} title=${exact}>
    ${relative.format(Math.round(seconds / size), unit)}</time>`;
}

// A modal <dialog>: the browser keeps the focus inside it and Escape closes it.
export function Dialog({ title, onClose, children }) {
  const ref = useRef(null);
  useEffect(() => {
    const dialog = ref.current;
    dialog.showModal();
    return () => dialog.open && dialog.close();
  }, []);
  return html`<dialog ref=${ref} aria-labelledby="dialog-title" onClose=${onClose}>
    <h2 id="dialog-title">${title}</h2>
    ${children}
  </dialog>`;
}

// A secret shown once, read-only, with a button that copies it.
export function SecretOnce({ secret, label = "Secret" }) {
  const [copied, setCopied] = useState(false);
  async function copy() {
    await navigator.clipboard.writeText(secret).catch(() => {});
    setCopied(true);
  }
  return html`<div class="secret">
    <label for="secret">${label}</label>
    <div class="row">
      <input id="secret" readonly value=${secret} onFocus=${(e) => e.target.select()} />
      <button type="button" onClick=${copy}>Copy</button>
    </div>
    <p class="warning" role="status">
      ${copied ? "Copied. " : ""}Store it now: it will not be shown again.</p>
  </div>`;
}

export function fieldErrors(userErrors) {
  const byField = {};
  for (const error of userErrors || []) {
    const field = (error.field || "").split(".")[0] || "_";
    byField[field] = [...(byField[field] || []), error.message];
  }
  return byField;
}

export function FieldError({ errors, field }) {
  const messages = errors[field];
  if (!messages) return null;
  return html`<p class="error" id=${`${field}-error`} role="alert">${messages.join(" ")}</p>`;
}

// Paging by cursor: the cursors of the pages seen so far, so that "Previous page" goes back.
export function usePaging() {
  const [cursors, setCursors] = useState([null]);
  return {
    after: cursors[cursors.length - 1],
    onFirstPage: cursors.length === 1,
    back: () => setCursors(cursors.slice(0, -1)),
    forward: (cursor) => setCursors([...cursors, cursor]),
    restart: () => setCursors([null]),
  };
}

export function Pager({ paging, pageInfo, children }) {
  return html`<div class="pager">${children}
    <button type="button" disabled=${paging.onFirstPage} onClick=${paging.back}>
      Previous page</button>
    <button type="button" disabled=${!pageInfo.hasNextPage}
      onClick=${() => paging.forward(pageInfo.endCursor)}>Next page</button>
  </div>`;
}
