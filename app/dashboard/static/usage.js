// Requests over time (valid and rejected), for the organization or one key.
import uPlot from "./vendor/uplot-1.6.32/uPlot.esm.js";
import { html, useEffect, useRef, useState } from "./html.js";
import { Loading, useOperation } from "./ui.js";

// Each range with a granularity that gives the chart between 24 and 168 points.
const RANGES = [
  { label: "24 hours", hours: 24, granularity: "HOUR" },
  { label: "7 days", hours: 7 * 24, granularity: "HOUR" },
  { label: "30 days", hours: 30 * 24, granularity: "DAY" },
  { label: "90 days", hours: 90 * 24, granularity: "DAY" },
];
const STEP = { HOUR: 3600e3, DAY: 86400e3 };

function period(range) {
  // Aligned to the granularity, so that the same range asks the same question for a while.
  const step = STEP[range.granularity];
  const to = Math.ceil(Date.now() / step) * step;
  return {
    from: new Date(to - range.hours * 3600e3).toISOString(),
    to: new Date(to).toISOString(),
    granularity: range.granularity,
  };
}

function Chart({ series }) {
  const box = useRef(null);
  useEffect(() => {
    const data = [
      series.map((point) => Date.parse(point.start) / 1000),
      series.map((point) => point.valid),
      series.map((point) => point.rejected),
    ];
    const width = Math.max(320, box.current.clientWidth);
    const plot = new uPlot({
      width,
      height: 280,
      series: [
        {},
        { label: "valid", stroke: "#1a7f37", fill: "rgba(26,127,55,0.12)" },
        { label: "rejected", stroke: "#cf222e", fill: "rgba(207,34,46,0.12)" },
      ],
      axes: [{}, { label: "requests" }],
    }, data, box.current);
    return () => plot.destroy();
  }, [series]);
  return html`<figure class="chart">
    <div ref=${box} role="img" aria-label="Requests over time, valid and rejected"></div>
    <figcaption class="muted">Requests per ${series.length > 100 ? "hour" : "bucket"}, UTC.
    </figcaption></figure>`;
}

// The layout of GET /v1/usage.csv (README "Usage as CSV"): one row per figure, its kind saying
// which table it belongs to, so the file and the endpoint read alike in an analyst's tool.
const COLUMNS = ["kind", "start", "key", "operation", "outcome", "requests", "valid", "rejected"];

function cell(value) {
  const text = String(value ?? "");
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

function csv(usage, breakdowns) {
  const counts = (row) => [row.requests, row.valid, row.rejected];
  const rows = [COLUMNS, ["total", "", "", "", "", ...counts(usage.totals)]];
  for (const point of usage.series) rows.push(["series", point.start, "", "", "", ...counts(point)]);
  for (const row of breakdowns ? breakdowns.byKey : []) {
    rows.push(["key", "", row.apiKey ? row.apiKey.id : "", "", "", ...counts(row)]);
  }
  for (const row of breakdowns ? breakdowns.byOperation : []) {
    rows.push(["operation", "", "", row.operation, "", ...counts(row)]);
  }
  for (const row of usage.byOutcome) {
    const valid = row.outcome === "VALID" ? row.requests : 0;
    rows.push(["outcome", "", "", "", row.outcome, row.requests, valid, row.requests - valid]);
  }
  return rows.map((row) => row.map(cell).join(",")).join("\r\n") + "\r\n";
}

function Download({ usage, breakdowns }) {
  const [url, setUrl] = useState(null);
  useEffect(() => {
    const made = URL.createObjectURL(new Blob([csv(usage, breakdowns)], { type: "text/csv" }));
    setUrl(made);
    return () => URL.revokeObjectURL(made);
  }, [usage, breakdowns]);
  return url && html`<a class="button secondary" href=${url} download="usage.csv">Download CSV</a>`;
}

function Counts({ row }) {
  return html`<td class="number">${row.requests}</td><td class="number">${row.valid}</td>
    <td class="number">${row.rejected}</td>`;
}

// A component, not a shared element: Preact keeps a rendered element's DOM on the element itself.
function CountHeaders() {
  return html`<th scope="col" class="number">Requests</th>
    <th scope="col" class="number">Valid</th><th scope="col" class="number">Rejected</th>`;
}

function KeyName({ apiKey }) {
  if (!apiKey) return html`<span class="muted">deleted key</span>`;
  // A key's row leads to that key's own usage, as the Keys page's link does.
  return html`<a href=${`/dashboard/usage?key=${encodeURIComponent(apiKey.id)}`}>${apiKey.name}</a>
    <span class="muted"> ${apiKey.hint} · ${apiKey.status}</span>`;
}

function Breakdowns({ data, oneKey }) {
  const { byKey, byOperation } = data.usage;
  return html`${!oneKey && html`<h2>Top keys</h2>
      <table><caption class="visually-hidden">The most used keys</caption>
        <thead><tr><th scope="col">Key</th><${CountHeaders} /></tr></thead>
        <tbody>${byKey.map((row, index) => html`<tr key=${row.apiKey ? row.apiKey.id : index}>
          <td><${KeyName} apiKey=${row.apiKey} /></td><${Counts} row=${row} /></tr>`)}</tbody>
      </table>`}
    <h2>Top operations</h2>
    <table><caption class="visually-hidden">The most used operations</caption>
      <thead><tr><th scope="col">Operation</th><${CountHeaders} /></tr></thead>
      <tbody>${byOperation.map((row) => html`<tr key=${row.operation}>
        <td><code>${row.operation}</code></td><${Counts} row=${row} /></tr>`)}</tbody>
    </table>`;
}

export function UsagePage() {
  const [range, setRange] = useState(RANGES[1]);
  const apiKeyId = new URLSearchParams(location.search).get("key");
  const variables = { ...period(range), apiKeyId };
  const state = useOperation("UsageChart", variables);
  // Apart from the chart: the key names need read:api_keys, and the chart must not wait for them.
  const tables = useOperation("UsageBreakdowns", variables);
  const usage = state.data && state.data.usage;
  const breakdowns = tables.data && tables.data.usage;
  return html`<div class="toolbar" role="group" aria-label="Range">
      ${RANGES.map((each) => html`<button type="button" aria-pressed=${each === range}
        class=${each === range ? "" : "secondary"} onClick=${() => setRange(each)}>
        ${each.label}</button>`)}
      ${usage && html`<${Download} usage=${usage} breakdowns=${breakdowns} />`}
    </div>
    ${apiKeyId && html`<p>One key's usage. <a href="/dashboard/usage">All keys</a></p>`}
    <${Loading} state=${state}>${usage && html`
      <ul class="counts">
        <li><strong>${usage.totals.requests}</strong> requests</li>
        <li class="status-active"><strong>${usage.totals.valid}</strong> valid</li>
        <li class="status-revoked"><strong>${usage.totals.rejected}</strong> rejected</li>
      </ul>
      <${Chart} series=${usage.series} />
      <h2>Outcomes</h2>
      <table><caption class="visually-hidden">Requests by outcome</caption>
        <thead><tr><th scope="col">Outcome</th><th scope="col" class="number">Requests</th></tr></thead>
        <tbody>${usage.byOutcome.map((row) => html`<tr key=${row.outcome}>
          <td>${row.outcome}</td><td class="number">${row.requests}</td></tr>`)}</tbody>
      </table>
      <${Loading} state=${tables}>${tables.data && html`
        <${Breakdowns} data=${tables.data} oneKey=${Boolean(apiKeyId)} />`}<//>`}<//>`;
}
