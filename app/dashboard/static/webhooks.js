// The webhooks page: the organization's endpoints (add, edit, pause, rotate the signing secret,
// delete) and, at ?endpoint=ID, one endpoint's delivery log.
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

export function WebhooksPage() {
  const endpointId = new URLSearchParams(location.search).get("endpoint");
  return endpointId ? html`<${Deliveries} endpointId=${endpointId} />` : html`<${Endpoints} />`;
}

function Endpoints() {
  const state = useOperation("WebhookEndpoints");
  const [dialog, setDialog] = useState(null);
  const close = () => setDialog(null);
  const endpoints = state.data && state.data.webhookEndpoints;
  const eventTypes = (state.data && state.data.webhookEventTypes) || [];
  return html`<p class="muted">keyhouse sends your systems an HTTP POST for each event of your
      keys, signed as Standard Webhooks, and retries for three days until it is acknowledged.</p>
    <div class="toolbar">
      <button type="button" onClick=${() => setDialog({ kind: "edit" })}>Add endpoint</button>
    </div>
    <${Loading} state=${state}>${endpoints && (endpoints.length ? html`
      <table>
        <caption class="visually-hidden">Webhook endpoints</caption>
        <thead><tr><th scope="col">URL</th><th scope="col">Events</th>
          <th scope="col">Status</th><th scope="col">Created</th>
          <th scope="col">Actions</th></tr></thead>
        <tbody>${endpoints.map((endpoint) => html`<${EndpointRow} key=${endpoint.id}
          endpoint=${endpoint} onChanged=${state.reload}
          onOpen=${(kind) => setDialog({ kind, endpoint })} />`)}</tbody>
      </table>` : html`<p>No endpoints yet.</p>`)}<//>
    ${dialog && dialog.kind === "edit" && html`<${EndpointDialog} endpoint=${dialog.endpoint}
      eventTypes=${eventTypes} onClose=${close} onSaved=${state.reload} />`}
    ${dialog && dialog.kind === "rotate" && html`<${RotateSecretDialog}
      endpoint=${dialog.endpoint} onClose=${close} onRotated=${state.reload} />`}
    ${dialog && dialog.kind === "delete" && html`<${DeleteDialog} endpoint=${dialog.endpoint}
      onClose=${close} onDeleted=${state.reload} />`}`;
}

function EndpointRow({ endpoint, onOpen, onChanged }) {
  const [failure, setFailure] = useState(null);
  const name = endpoint.description || endpoint.url;
  async function setEnabled(enabled) {
    try {
      const { updateWebhookEndpoint } = await request("UpdateWebhookEndpoint",
        { input: { id: endpoint.id, enabled } });
      if (updateWebhookEndpoint.userErrors.length) {
        throw new Error(updateWebhookEndpoint.userErrors[0].message);
      }
      onChanged();
    } catch (error) {
      setFailure(error);
    }
  }
  return html`<tr>
    <th scope="row"><code>${endpoint.url}</code>
      ${endpoint.description && html`<div class="muted">${endpoint.description}</div>`}</th>
    <td>${endpoint.events.map((event) => html`<span class="scope">${event}</span> `)}</td>
    <td>${endpoint.enabled
      ? html`<span class="status status-active">ENABLED</span>`
      : html`<span class="status status-disabled">DISABLED</span>
        <div class="muted">since <${RelativeTime} value=${endpoint.disabledAt} /></div>`}
      ${endpoint.previousSecretExpiresAt && html`<div class="muted">previous secret signs
        until <${RelativeTime} value=${endpoint.previousSecretExpiresAt} /></div>`}</td>
    <td><${RelativeTime} value=${endpoint.createdAt} /></td>
    <td class="actions">
      <a href=${`/dashboard/webhooks?endpoint=${encodeURIComponent(endpoint.id)}`}
        aria-label=${`Deliveries to ${name}`}>Deliveries</a>
      <button type="button" class="secondary" onClick=${() => onOpen("edit")}
        aria-label=${`Edit ${name}`}>Edit</button>
      <button type="button" class="secondary" onClick=${() => setEnabled(!endpoint.enabled)}
        aria-label=${`${endpoint.enabled ? "Pause" : "Enable"} ${name}`}>
        ${endpoint.enabled ? "Pause" : "Enable"}</button>
      <button type="button" class="secondary" onClick=${() => onOpen("rotate")}
        aria-label=${`Rotate secret of ${name}`}>Rotate secret</button>
      <button type="button" class="danger" onClick=${() => onOpen("delete")}
        aria-label=${`Delete ${name}`}>Delete</button>
      <${Failure} error=${failure} />
    </td>
  </tr>`;
}

// Adds an endpoint (no `endpoint`) or edits one; a new endpoint's signing secret is shown once.
function EndpointDialog({ endpoint, eventTypes, onClose, onSaved }) {
  const [form, setForm] = useState({
    url: endpoint ? endpoint.url : "",
    description: endpoint ? endpoint.description : "",
    events: endpoint ? endpoint.events : [],
  });
  const [errors, setErrors] = useState({});
  const [failure, setFailure] = useState(null);
  const [secret, setSecret] = useState(null);
  const set = (name, value) => setForm({ ...form, [name]: value });
  const toggle = (event, on) =>
    set("events", on ? [...form.events, event] : form.events.filter((e) => e !== event));
  async function save(event) {
    event.preventDefault();
    const input = { url: form.url.trim(), description: form.description, events: form.events };
    try {
      const payload = endpoint
        ? (await request("UpdateWebhookEndpoint", { input: { id: endpoint.id, ...input } }))
          .updateWebhookEndpoint
        : (await request("CreateWebhookEndpoint", { input })).createWebhookEndpoint;
      setFailure(null);
      setErrors(fieldErrors(payload.userErrors));
      if (payload.userErrors.length) return;
      onSaved();
      if (payload.signingSecret) setSecret(payload.signingSecret);
      else onClose();
    } catch (error) {
      setFailure(error);
    }
  }
  if (secret) {
    return html`<${Dialog} title="Endpoint added" onClose=${onClose}>
      <p>Verify each request's <code>webhook-signature</code> header with this secret.</p>
      <${SecretOnce} secret=${secret} label="Signing secret" />
      <button type="button" onClick=${onClose}>Done</button><//>`;
  }
  return html`<${Dialog} title=${endpoint ? "Edit endpoint" : "Add endpoint"} onClose=${onClose}>
    <form class="stack" onSubmit=${save}>
      <label for="endpoint-url">URL</label>
      <input id="endpoint-url" type="url" value=${form.url} required
        aria-describedby="endpoint-url-help" onInput=${(e) => set("url", e.target.value)} />
      <p class="help" id="endpoint-url-help">An https address of your systems, reachable from
        the internet.</p>
      <${FieldError} errors=${errors} field="url" />
      <label for="endpoint-description">Description (optional)</label>
      <input id="endpoint-description" value=${form.description}
        onInput=${(e) => set("description", e.target.value)} />
      <${FieldError} errors=${errors} field="description" />
      <fieldset><legend>Events</legend>
        ${eventTypes.map((type) => html`<label class="check">
          <input type="checkbox" checked=${form.events.includes(type.name)}
            onChange=${(e) => toggle(type.name, e.target.checked)} />
          ${type.name} <span class="muted">${type.description}</span></label>`)}
      </fieldset>
      <${FieldError} errors=${errors} field="events" />
      <${FieldError} errors=${errors} field="_" />
      <${Failure} error=${failure} />
      <div class="buttons"><button type="submit">${endpoint ? "Save" : "Add"}</button>
        <button type="button" class="secondary" onClick=${onClose}>Cancel</button></div>
    </form><//>`;
}

function RotateSecretDialog({ endpoint, onClose, onRotated }) {
  const [failure, setFailure] = useState(null);
  const [secret, setSecret] = useState(null);
  async function rotate() {
    try {
      const { rotateWebhookSigningSecret: payload } =
        await request("RotateWebhookSigningSecret", { id: endpoint.id });
      if (payload.userErrors.length) throw new Error(payload.userErrors[0].message);
      setSecret(payload.signingSecret);
      onRotated();
    } catch (error) {
      setFailure(error);
    }
  }
  if (secret) {
    return html`<${Dialog} title="Signing secret rotated" onClose=${onClose}>
      <${SecretOnce} secret=${secret} label="Signing secret" />
      <button type="button" onClick=${onClose}>Done</button><//>`;
  }
  return html`<${Dialog} title="Rotate the signing secret?" onClose=${onClose}>
    <p>Requests to <code>${endpoint.url}</code> are signed with a new secret, and with the
      current one beside it for 24 hours, so your receiver can switch without missing one.</p>
    <${Failure} error=${failure} />
    <div class="buttons"><button type="button" onClick=${rotate}>Rotate</button>
      <button type="button" class="secondary" onClick=${onClose}>Cancel</button></div><//>`;
}

function DeleteDialog({ endpoint, onClose, onDeleted }) {
  const [failure, setFailure] = useState(null);
  async function remove() {
    try {
      const { deleteWebhookEndpoint } = await request("DeleteWebhookEndpoint", { id: endpoint.id });
      if (deleteWebhookEndpoint.userErrors.length) {
        throw new Error(deleteWebhookEndpoint.userErrors[0].message);
      }
      onDeleted();
      onClose();
    } catch (error) {
      setFailure(error);
    }
  }
  return html`<${Dialog} title="Delete this endpoint?" onClose=${onClose}>
    <p>Nothing more is sent to <code>${endpoint.url}</code>, and its delivery log is deleted.</p>
    <${Failure} error=${failure} />
    <div class="buttons"><button type="button" class="danger" onClick=${remove}>Delete</button>
      <button type="button" class="secondary" onClick=${onClose}>Cancel</button></div><//>`;
}

const DELIVERY_STATUS = { PENDING: "status-superseded", SUCCEEDED: "status-active",
  FAILED: "status-revoked" };

function Deliveries({ endpointId }) {
  const paging = usePaging();
  const endpoints = useOperation("WebhookEndpoints");
  const state = useOperation("WebhookDeliveries",
    { endpointId, first: 20, after: paging.after });
  const endpoint = endpoints.data &&
    endpoints.data.webhookEndpoints.find((each) => each.id === endpointId);
  const log = state.data && state.data.webhookDeliveries;
  const count = log && (log.totalCount >= 1000 ? "1,000+" : String(log.totalCount));
  return html`<p><a href="/dashboard/webhooks">All endpoints</a></p>
    ${endpoint && html`<h2>Deliveries to <code>${endpoint.url}</code></h2>`}
    <${Loading} state=${state}>${log && html`
    <p class="muted">${count} ${count === "1" ? "delivery" : "deliveries"}, newest first.</p>
    <table>
      <caption class="visually-hidden">Deliveries</caption>
      <thead><tr><th scope="col">Event</th><th scope="col">Status</th>
        <th scope="col" class="number">Attempts</th><th scope="col">Last answer</th>
        <th scope="col">Created</th><th scope="col">Last attempt</th>
        <th scope="col">Next attempt</th></tr></thead>
      <tbody>${log.edges.map(({ node }) => html`<tr key=${node.id}>
        <th scope="row">${node.eventType}<div class="muted"><code>${node.eventId}</code></div></th>
        <td><span class=${`status ${DELIVERY_STATUS[node.status]}`}>${node.status}</span></td>
        <td class="number">${node.attempts}</td>
        <td>${node.responseStatus == null ? "" : html`<code>${node.responseStatus}</code> `}
          <span class="muted">${node.responseExcerpt || ""}</span></td>
        <td><${RelativeTime} value=${node.createdAt} /></td>
        <td><${RelativeTime} value=${node.lastAttemptAt} /></td>
        <td><${RelativeTime} value=${node.nextAttemptAt} empty="—" /></td></tr>`)}
      </tbody>
    </table>
    <${Pager} paging=${paging} pageInfo=${log.pageInfo} />`}<//>`;
}
