// The keys table: filters, paging, and the create, rotate and revoke dialogs.
import { request } from "./api.js";
import { html, useState } from "./html.js";
import {
  Dialog,
  Failure,
  FieldError,
  Loading,
  Pager,
  RelativeTime,
  SecretOnce,
  fieldErrors,
  useOperation,
  usePaging,
} from "./ui.js";

// `?first=N` (1 to 100, the API's bound) shows more keys a page: a bookmarkable address.
const PAGE_SIZE = Math.min(100, Math.max(1,
  Number(new URLSearchParams(location.search).get("first")) || 20));
const SOON_DAYS = 7;
const STATUS_FILTERS = ["ALL", "ACTIVE", "DISABLED", "REVOKED", "EXPIRED", "SUPERSEDED"];

function expiresSoon(key) {
  return key.status === "ACTIVE" && key.expiresInDays != null && key.expiresInDays <= SOON_DAYS;
}

function KeyRow({ apiKey, onRevoke, onRotate }) {
  const active = apiKey.status === "ACTIVE";
  return html`<tr class=${expiresSoon(apiKey) ? "soon" : ""}>
    <th scope="row">${apiKey.name}</th>
    <td><code>${apiKey.hint}</code></td>
    <td>${apiKey.scopes.map((scope) => html`<span class="scope">${scope}</span> `)}</td>
    <td><span class=${`status status-${apiKey.status.toLowerCase()}`}>${apiKey.status}</span>
      ${apiKey.leakedAt && html` <span class="badge" title=${`Reported found in public ${apiKey.leakedAt}`}>leaked</span>`}</td>
    <td><${RelativeTime} value=${apiKey.createdAt} /></td>
    <td><${RelativeTime} value=${apiKey.lastUsedAt} /></td>
    <td><${RelativeTime} value=${apiKey.expiresAt} empty="never" />
      ${expiresSoon(apiKey) && html` <span class="badge">expires soon</span>`}</td>
    <td class="actions">
      <a href=${`/dashboard/usage?key=${encodeURIComponent(apiKey.id)}`}
        aria-label=${`Usage of ${apiKey.name}`}>Usage</a>
      ${active && html`
        <button type="button" class="secondary" onClick=${() => onRotate(apiKey)}
          aria-label=${`Rotate ${apiKey.name}`}>Rotate</button>
        <button type="button" class="danger" onClick=${() => onRevoke(apiKey)}
          aria-label=${`Revoke ${apiKey.name}`}>Revoke</button>`}
    </td>
  </tr>`;
}

function Filters({ scopes, filter, onChange }) {
  return html`<div class="filters">
    <label for="status-filter">Status</label>
    <select id="status-filter" value=${filter.status}
      onChange=${(e) => onChange({ ...filter, status: e.target.value })}>
      ${STATUS_FILTERS.map((status) => html`<option value=${status}>${status}</option>`)}
    </select>
    <label for="scope-filter">Scope</label>
    <select id="scope-filter" value=${filter.scope || ""}
      onChange=${(e) => onChange({ ...filter, scope: e.target.value || null })}>
      <option value="">any</option>
      ${scopes.map((scope) => html`<option value=${scope.name}>${scope.name}</option>`)}
    </select>
  </div>`;
}

export function KeysPage() {
  const [filter, setFilter] = useState({ status: "ALL", scope: null });
  const paging = usePaging();
  const [dialog, setDialog] = useState(null);
  const scopes = useOperation("Scopes");
  const variables = { first: PAGE_SIZE, after: paging.after, filter };
  const state = useOperation("KeysPage", variables);
  const page = state.data && state.data.apiKeys;
  const filterBy = (next) => {
    setFilter(next);
    paging.restart();
  };
  // After a change the row shows its new status without a reload of the page.
  const replace = (changed) => {
    if (!page) return;
    const edges = page.edges.map((edge) =>
      edge.node.id === changed.id ? { ...edge, node: { ...edge.node, ...changed } } : edge);
    state.setData({ apiKeys: { ...page, edges } });
  };
  const close = () => setDialog(null);
  return html`<div class="toolbar">
      <${Filters} scopes=${(scopes.data && scopes.data.scopes) || []} filter=${filter}
        onChange=${filterBy} />
      <button type="button" onClick=${() => setDialog({ kind: "create" })}>Create key</button>
    </div>
    <${Loading} state=${state}>${page && html`
      <table class="keys">
        <caption class="visually-hidden">API keys</caption>
        <thead><tr><th scope="col">Name</th><th scope="col">Hint</th><th scope="col">Scopes</th>
          <th scope="col">Status</th><th scope="col">Created</th><th scope="col">Last used</th>
          <th scope="col">Expires</th><th scope="col">Actions</th></tr></thead>
        <tbody>${page.edges.map(({ node }) => html`<${KeyRow} key=${node.id} apiKey=${node}
          onRevoke=${(apiKey) => setDialog({ kind: "revoke", apiKey })}
          onRotate=${(apiKey) => setDialog({ kind: "rotate", apiKey })} />`)}</tbody>
      </table>
      <${Pager} paging=${paging} pageInfo=${page.pageInfo}>
        <span class="muted">${page.totalCount} keys</span><//>`}<//>
    ${dialog && dialog.kind === "create" && html`<${CreateDialog}
      scopes=${(scopes.data && scopes.data.scopes) || []} onClose=${close}
      onCreated=${state.reload} />`}
    ${dialog && dialog.kind === "revoke" && html`<${RevokeDialog} apiKey=${dialog.apiKey}
      onClose=${close} onRevoked=${replace} />`}
    ${dialog && dialog.kind === "rotate" && html`<${RotateDialog} apiKey=${dialog.apiKey}
      onClose=${close} onRotated=${(previous) => { replace(previous); state.reload(); }} />`}`;
}

function createInput(form) {
  const input = { name: form.name.trim(), scopes: form.scopes };
  if (form.expiresInDays !== "") input.expiresInDays = Number(form.expiresInDays);
  if (form.requests !== "") {
    input.rateLimit = { requests: Number(form.requests), perSeconds: Number(form.perSeconds) };
  }
  return input;
}

function CreateDialog({ scopes, onClose, onCreated }) {
  const [form, setForm] = useState({
    name: "", scopes: [], expiresInDays: "90", requests: "", perSeconds: "60",
  });
  const [errors, setErrors] = useState({});
  const [failure, setFailure] = useState(null);
  const [secret, setSecret] = useState(null);
  // One idempotency key per dialog: a retried submit returns the same key, not a second one.
  const [idempotencyKey] = useState(() => crypto.randomUUID());
  const set = (name, value) => setForm({ ...form, [name]: value });
  const toggle = (scope, on) =>
    set("scopes", on ? [...form.scopes, scope] : form.scopes.filter((s) => s !== scope));
  async function create(event) {
    event.preventDefault();
    try {
      const input = { ...createInput(form), idempotencyKey };
      const { createApiKey } = await request("CreateApiKey", { input });
      setFailure(null);
      setErrors(fieldErrors(createApiKey.userErrors));
      if (createApiKey.secret) {
        setSecret(createApiKey.secret);
        onCreated();
      }
    } catch (error) {
      setFailure(error);
    }
  }
  if (secret) {
    return html`<${Dialog} title="Key created" onClose=${onClose}>
      <${SecretOnce} secret=${secret} />
      <button type="button" onClick=${onClose}>Done</button><//>`;
  }
  return html`<${Dialog} title="Create key" onClose=${onClose}>
    <form class="stack" onSubmit=${create}>
      <label for="key-name">Name</label>
      <input id="key-name" value=${form.name} required
        onInput=${(e) => set("name", e.target.value)} />
      <${FieldError} errors=${errors} field="name" />
      <fieldset><legend>Scopes</legend>
        ${scopes.map((scope) => html`<label class="check">
          <input type="checkbox" checked=${form.scopes.includes(scope.name)}
            onChange=${(e) => toggle(scope.name, e.target.checked)} />
          ${scope.name} <span class="muted">${scope.description}</span></label>`)}
      </fieldset>
      <${FieldError} errors=${errors} field="scopes" />
      <label for="key-expiry">Expires in (days, empty: never)</label>
      <input id="key-expiry" type="number" min="1" value=${form.expiresInDays}
        onInput=${(e) => set("expiresInDays", e.target.value)} />
      <${FieldError} errors=${errors} field="expiresInDays" />
      <label for="key-requests">Rate limit: requests (empty: the default)</label>
      <input id="key-requests" type="number" min="1" value=${form.requests}
        onInput=${(e) => set("requests", e.target.value)} />
      <label for="key-period">Rate limit: per seconds</label>
      <input id="key-period" type="number" min="1" value=${form.perSeconds}
        onInput=${(e) => set("perSeconds", e.target.value)} />
      <${FieldError} errors=${errors} field="rateLimit" />
      <${FieldError} errors=${errors} field="_" />
      <${Failure} error=${failure} />
      <div class="buttons"><button type="submit">Create</button>
        <button type="button" class="secondary" onClick=${onClose}>Cancel</button></div>
    </form><//>`;
}

function RevokeDialog({ apiKey, onClose, onRevoked }) {
  const [failure, setFailure] = useState(null);
  async function revoke() {
    try {
      const { revokeApiKey } = await request("RevokeApiKey", { id: apiKey.id });
      if (revokeApiKey.userErrors.length) throw new Error(revokeApiKey.userErrors[0].message);
      onRevoked(revokeApiKey.apiKey);
      onClose();
    } catch (error) {
      setFailure(error);
    }
  }
  return html`<${Dialog} title=${`Revoke ${apiKey.name}?`} onClose=${onClose}>
    <p>Requests with <code>${apiKey.hint}</code> are refused from now on. This cannot be undone.</p>
    <${Failure} error=${failure} />
    <div class="buttons"><button type="button" class="danger" onClick=${revoke}>Revoke</button>
      <button type="button" class="secondary" onClick=${onClose}>Cancel</button></div><//>`;
}

function RotateDialog({ apiKey, onClose, onRotated }) {
  const [hours, setHours] = useState("24");
  const [failure, setFailure] = useState(null);
  const [errors, setErrors] = useState({});
  const [secret, setSecret] = useState(null);
  const [idempotencyKey] = useState(() => crypto.randomUUID());
  async function rotate(event) {
    event.preventDefault();
    try {
      const input = { id: apiKey.id, gracePeriodHours: Number(hours), idempotencyKey };
      const { rotateApiKey } = await request("RotateApiKey", { input });
      setErrors(fieldErrors(rotateApiKey.userErrors));
      if (rotateApiKey.secret) {
        setSecret(rotateApiKey.secret);
        onRotated(rotateApiKey.previousApiKey);
      }
    } catch (error) {
      setFailure(error);
    }
  }
  if (secret) {
    return html`<${Dialog} title="Key rotated" onClose=${onClose}>
      <${SecretOnce} secret=${secret} />
      <button type="button" onClick=${onClose}>Done</button><//>`;
  }
  return html`<${Dialog} title=${`Rotate ${apiKey.name}`} onClose=${onClose}>
    <form class="stack" onSubmit=${rotate}>
      <label for="grace-hours">Grace period in hours (how long the old key keeps working)</label>
      <input id="grace-hours" type="number" min="0" max="720" value=${hours}
        onInput=${(e) => setHours(e.target.value)} />
      <${FieldError} errors=${errors} field="gracePeriodHours" />
      <${Failure} error=${failure} />
      <div class="buttons"><button type="submit">Rotate</button>
        <button type="button" class="secondary" onClick=${onClose}>Cancel</button></div>
    </form><//>`;
}
