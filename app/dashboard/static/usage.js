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

function csv(usage) {
  const rows = [["start", "requests", "valid", "rejected"]];
  for (const point of usage.series) {
    rows.push([point.start, point.requests, point.valid, point.rejected]);
  }
  return rows.map((row) => row.join(",")).join("\n") + "\n";
}

function Download({ usage }) {
  const [url, setUrl] = useState(null);
  useEffect(() => {
    const made = URL.createObjectURL(new Blob([csv(usage)], { type: "text/csv" }));
    setUrl(made);
    return () => URL.revokeObjectURL(made);
  }, [usage]);
  return url && html`<a class="button secondary" href=${url} download="usage.csv">Download CSV</a>`;
}

export function UsagePage() {
  const [range, setRange] = useState(RANGES[1]);
  const apiKeyId = new URLSearchParams(location.search).get("key");
  const state = useOperation("UsageChart", { ...period(range), apiKeyId });
  const usage = state.data && state.data.usage;
  return html`<div class="toolbar" role="group" aria-label="Range">
      ${RANGES.map((each) => html`<button type="button" aria-pressed=${each === range}
        class=${each === range ? "" : "secondary"} onClick=${() => setRange(each)}>
        ${each.label}</button>`)}
      ${usage && html`<${Download} usage=${usage} />`}
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
        <thead><tr><th scope="col">Outcome</th><th scope="col">Requests</th></tr></thead>
        <tbody>${usage.byOutcome.map((row) => html`<tr key=${row.outcome}>
          <td>${row.outcome}</td><td>${row.requests}</td></tr>`)}</tbody>
      </table>`}<//>`;
}
