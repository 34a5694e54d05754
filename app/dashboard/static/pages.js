// The overview, the key policy editor and the audit log.
import { request } from "./api.js";
import { html, useState } from "./html.js";
import {
  Failure,
  FieldError,
  Loading,
  Pager,
  RelativeTime,
  fieldErrors,
  useOperation,
  usePaging,
} from "./ui.js";

const STATUSES = ["active", "revoked", "expired", "superseded"];

function PolicySummary({ policy }) {
  return html`<dl class="facts">
    <dt>Single active key</dt><dd>${policy.singleActiveKey ? "on" : "off"}</dd>
    <dt>Grace period when superseded</dt><dd>${policy.supersedeGraceHours} hours</dd>
    <dt>Longest expiry</dt>
    <dd>${policy.maxExpiresInDays == null ? "no limit" : `${policy.maxExpiresInDays} days`}</dd>
    <dt>Expiry required</dt><dd>${policy.requireExpiry ? "yes" : "no"}</dd>
    <dt>A key reported leaked</dt>
    <dd>${policy.leakedKeyAction === "NOTIFY" ? "is flagged" : "is revoked"}</dd>
  </dl>`;
}

export function OverviewPage() {
  const state = useOperation("OrganizationOverview");
  const organization = state.data && state.data.organization;
  return html`<${Loading} state=${state}>${organization && html`
    <section aria-labelledby="organization">
      <h2 id="organization">${organization.name}</h2>
      <p class="muted">Created <${RelativeTime} value=${organization.createdAt} /></p>
      <ul class="counts">
        <li><strong>${organization.keyCounts.total}</strong> keys</li>
        ${STATUSES.map((status) => html`<li class=${`status-${status}`}>
          <strong>${organization.keyCounts[status]}</strong> ${status}</li>`)}
      </ul>
    </section>
    <section aria-labelledby="policy"><h2 id="policy">Key policy</h2>
      <${PolicySummary} policy=${organization.keyPolicy} />
    </section>`}<//>`;
}

function PolicyForm({ policy, onSaved }) {
  const [form, setForm] = useState({
    singleActiveKey: policy.singleActiveKey,
    supersedeGraceHours: String(policy.supersedeGraceHours),
    maxExpiresInDays: policy.maxExpiresInDays == null ? "" : String(policy.maxExpiresInDays),
    requireExpiry: policy.requireExpiry,
    leakedKeyAction: policy.leakedKeyAction,
  });
  const [errors, setErrors] = useState({});
  const [failure, setFailure] = useState(null);
  const [saved, setSaved] = useState(false);
  const set = (name, value) => setForm({ ...form, [name]: value });
  async function save(event) {
    event.preventDefault();
    setSaved(false);
    const input = {
      singleActiveKey: form.singleActiveKey,
      supersedeGraceHours: Number(form.supersedeGraceHours),
      maxExpiresInDays: form.maxExpiresInDays === "" ? null : Number(form.maxExpiresInDays),
      requireExpiry: form.requireExpiry,
      leakedKeyAction: form.leakedKeyAction,
    };
    try {
      const { updateKeyPolicy } = await request("UpdateKeyPolicy", { input });
      setFailure(null);
      setErrors(fieldErrors(updateKeyPolicy.userErrors));
      if (!updateKeyPolicy.userErrors.length) {
        setSaved(true);
        onSaved();
      }
    } catch (error) {
      setFailure(error);
    }
  }
  return html`<form class="stack" onSubmit=${save}>
    <label class="check"><input type="checkbox" checked=${form.singleActiveKey}
      onChange=${(e) => set("singleActiveKey", e.target.checked)} /> Single active key</label>
    <${FieldError} errors=${errors} field="singleActiveKey" />
    <label for="grace">Grace period when superseded (hours)</label>
    <input id="grace" type="number" min="0" value=${form.supersedeGraceHours}
      onInput=${(e) => set("supersedeGraceHours", e.target.value)} />
    <${FieldError} errors=${errors} field="supersedeGraceHours" />
    <label for="max-expiry">Longest expiry (days, empty: no limit)</label>
    <input id="max-expiry" type="number" min="1" value=${form.maxExpiresInDays}
      onInput=${(e) => set("maxExpiresInDays", e.target.value)} />
    <${FieldError} errors=${errors} field="maxExpiresInDays" />
    <label class="check"><input type="checkbox" checked=${form.requireExpiry}
      onChange=${(e) => set("requireExpiry", e.target.checked)} /> Require an expiry</label>
    <${FieldError} errors=${errors} field="requireExpiry" />
    <label for="leaked">When a secret scanner reports a key found in public</label>
    <select id="leaked" value=${form.leakedKeyAction}
      onChange=${(e) => set("leakedKeyAction", e.target.value)}>
      <option value="REVOKE">Revoke it at once</option>
      <option value="NOTIFY">Only flag it (webhook and audit log)</option>
    </select>
    <${FieldError} errors=${errors} field="leakedKeyAction" />
    <${Failure} error=${failure} />
    <div><button type="submit">Save policy</button>
      ${saved && html`<span role="status"> Saved.</span>`}</div>
  </form>`;
}

export function PolicyPage() {
  const state = useOperation("KeyPolicy");
  const organization = state.data && state.data.organization;
  return html`<${Loading} state=${state}>${organization && html`
    <p>${organization.keyCounts.active} active keys.</p>
    <${PolicyForm} policy=${organization.keyPolicy} onSaved=${state.reload} />`}<//>`;
}

function Details({ details }) {
  const entries = Object.entries(details || {});
  if (!entries.length) return html`<span class="muted">—</span>`;
  return html`<dl class="details">${entries.map(([name, value]) => html`
    <dt>${name}</dt><dd>${typeof value === "object" ? JSON.stringify(value) : String(value)}</dd>`)}
  </dl>`;
}

export function AuditLogPage() {
  const paging = usePaging();
  const state = useOperation("AuditLog", { first: 20, after: paging.after });
  const log = state.data && state.data.auditLog;
  return html`<${Loading} state=${state}>${log && html`
    <p class="muted">${log.totalCount} events, newest first.</p>
    <table>
      <caption class="visually-hidden">Audit log</caption>
      <thead><tr><th scope="col">When</th><th scope="col">Action</th><th scope="col">Actor</th>
        <th scope="col">Key</th><th scope="col">Details</th></tr></thead>
      <tbody>${log.edges.map(({ node }) => html`<tr key=${node.id}>
        <td><${RelativeTime} value=${node.occurredAt} /></td>
        <td>${node.action}</td>
        <td>${node.actor.hint ? html`<code>${node.actor.hint}</code>` : "keyhouse CLI"}</td>
        <td>${node.apiKey ? html`${node.apiKey.name} <code>${node.apiKey.hint}</code>` : "—"}</td>
        <td><${Details} details=${node.details} /></td></tr>`)}
      </tbody>
    </table>
    <${Pager} paging=${paging} pageInfo=${log.pageInfo} />`}<//>`;
}
