// The live status page: polls /api/status and draws every model, its last windows and recent alerts.
// No library and no CDN, so it works offline; text from the data is set as text, never as HTML.
"use strict";

const REFRESH_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";

// A token given as #token=... in the address is kept for this tab and sent as a bearer token.
const hashToken = new URLSearchParams(location.hash.slice(1)).get("token");
if (hashToken) sessionStorage.setItem("stream-monitor-token", hashToken);
const token = sessionStorage.getItem("stream-monitor-token");

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const child of children) node.append(child);
  return node;
}

function fmt(value, digits = 1, unit = "") {
  return value === null || value === undefined ? "–" : `${Number(value).toFixed(digits)}${unit}`;
}

function when(ts) {
  return ts ? new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) : "–";
}

// A small line chart: one polyline per series over the same x positions, a label with the last value
// of `labelKey`, and a legend when it draws several lines. The scale reaches at least `floor`, so that
// a small value looks small on every card instead of filling its chart.
function chart(name, points, lines, unit, { labelKey = lines[lines.length - 1][0], floor = 1e-9 } = {}) {
  const width = 300, height = 56, pad = 12;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", `chart chart-${name}`);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const values = points.flatMap((p) => lines.map(([key]) => p[key])).filter((v) => v !== null && v !== undefined);
  const top = Math.max(...values, floor);
  for (const [key, cls] of lines) {
    const coords = points
      .map((p, i) => [i, p[key]])
      .filter(([, v]) => v !== null && v !== undefined)
      .map(([i, v]) => {
        const x = points.length > 1 ? (i / (points.length - 1)) * width : width / 2;
        const y = height - pad / 2 - (v / top) * (height - pad * 1.5);
        return `${x.toFixed(1)},${y.toFixed(1)}`;
      });
    if (!coords.length) continue;
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", cls);
    line.setAttribute("points", coords.length === 1 ? `${coords[0]} ${coords[0]}` : coords.join(" "));
    svg.append(line);
  }
  const label = document.createElementNS(SVG, "text");
  label.setAttribute("x", "2");
  label.setAttribute("y", "9");
  const last = points.length ? points[points.length - 1][labelKey] : null;
  const title = lines.length > 1 ? `${name} ${labelKey}` : name;
  label.textContent = `${title}: ${fmt(last, unit.trim() === "PSI" ? 2 : 1, unit)} (scale ${fmt(top, 2)})`;
  svg.append(label);
  if (lines.length === 1) return svg;
  const legend = el("div", { class: "legend" }, ...lines.map(([key, cls]) => el("span", { class: `key ${cls}` }, key)));
  const box = el("div", { class: `chart-box chart-box-${name}` });
  box.append(svg, legend);
  return box;
}

function card(model, version) {
  const health = version.health;
  const current = version.current;
  const node = el("div", { class: `card ${health}`, "data-model": model, "data-health": health });
  node.append(
    el("h3", {}, el("span", {}, `${model} `, el("small", {}, version.model_version)), el("span", { class: `badge ${health}` }, health)),
    el(
      "div",
      { class: "figures" },
      el("span", {}, `${version.events} events`),
      el("span", {}, `p95 ${fmt(current.p95, 1, " ms")}`),
      el("span", {}, `errors ${fmt(current.error_rate === null ? null : current.error_rate * 100, 1, " %")}`),
      el("span", {}, `${fmt(current.throughput_per_s, 1, "/s")}`),
      el("span", { class: "age" }, version.traffic && version.traffic.quiet_s !== null
        ? `last record ${fmt(version.traffic.quiet_s, 0, " s")} ago` : "no record yet"),
    ),
  );
  if (version.stale) {
    node.append(el("p", { class: "stale" }, "silent: no records lately; the figures and alerts below are from the last traffic"));
  }
  const series = version.series.map((p) => ({ ...p, error_pct: p.error_rate === null ? null : p.error_rate * 100 }));
  // The card's figure is p95: so is the chart's label. Errors are drawn to at least 5 %, drift to at least
  // PSI 0.25 (a large shift), so that every card's chart is on a comparable scale.
  node.append(chart("latency", series, [["p50", "p50"], ["p95", "p95"], ["p99", "p99"]], " ms", { labelKey: "p95" }));
  node.append(chart("errors", series, [["error_pct", "errors"]], " %", { floor: 5 }));
  node.append(chart("drift", series, [["psi_max", "drift"]], " PSI", { floor: 0.25 }));
  if (version.segments && version.segments.length) {
    // Which slice of the traffic is in trouble: a segment with alerts firing is marked.
    const table = el("table", { class: "segments" }, el("tr", {}, ...["segment", "events", "p95", "errors", "firing"].map((h) => el("th", {}, h))));
    for (const s of version.segments) {
      table.append(el("tr", { "data-segment": s.segment, class: s.firing.length ? "segment-firing" : "" },
        el("td", {}, s.segment), el("td", {}, `${s.events}`), el("td", {}, fmt(s.p95, 1, " ms")),
        el("td", {}, fmt(s.error_rate === null ? null : s.error_rate * 100, 1, " %")),
        el("td", {}, s.firing.join(", ") || "-")));
    }
    node.append(table);
  }
  if (version.incidents.length) {
    // One line per incident: the detectors that agree about one signal are one episode, not several pages.
    const list = el("ul", { class: "firing" });
    for (const incident of version.incidents) {
      list.append(el("li", { "data-incident": incident.incident, class: `sev-${incident.severity}` },
        `${incident.severity}: ${incident.signal}${incident.segment ? ` in ${incident.segment}` : ""} (${incident.detectors.join(", ")}, since ${when(incident.since)}): ${incident.message}`));
    }
    node.append(list);
  }
  return node;
}

function alertRow(alert) {
  const evidence = el("details", {}, el("summary", {}, alert.message), el("pre", {}, JSON.stringify({
    value: alert.value, threshold: alert.threshold, baseline: alert.baseline, evidence: alert.evidence,
  }, null, 2)));
  return el(
    "tr",
    { class: `alert ${alert.status}`, "data-alert-id": alert.alert_id },
    el("td", {}, when(alert.event_time)),
    // A resolved alert is over: not coloured as an incident.
    el("td", { class: alert.status === "resolved" ? "sev-resolved" : `sev-${alert.severity}` }, alert.severity),
    el("td", {}, alert.status),
    el("td", {}, `${alert.model} ${alert.model_version}${alert.segment ? ` (${alert.segment})` : ""}`),
    el("td", {}, `${alert.signal} (${alert.detector})`),
    el("td", {}, evidence),
  );
}

function render(status) {
  const models = document.getElementById("models");
  const cards = status.models.flatMap((m) => m.versions.map((v) => card(m.model, v)));
  models.replaceChildren(...cards);
  if (!cards.length) models.append(el("p", { class: "quiet" }, "No events seen yet."));
  const body = document.querySelector("#alerts tbody");
  body.replaceChildren(...status.alerts.map(alertRow));
  document.getElementById("no-alerts").hidden = status.alerts.length > 0;
  const counts = status.models.reduce((acc, m) => ((acc[m.health] = (acc[m.health] || 0) + 1), acc), {});
  document.getElementById("summary").textContent =
    `${status.models.length} models: ${counts.ok || 0} ok, ${counts.warning || 0} warning, ${counts.critical || 0} critical` +
    (counts.silent ? `, ${counts.silent} silent` : "");
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  document.body.dataset.loaded = "true";
}

async function refresh() {
  const problem = document.getElementById("error");
  try {
    const response = await fetch("/api/status", { headers: token ? { Authorization: `Bearer ${token}` } : {} });
    if (!response.ok) throw new Error(`/api/status answered ${response.status}` +
      (response.status === 401 ? ": open the page as /#token=YOUR_TOKEN" : ""));
    render(await response.json());
    problem.hidden = true;
  } catch (err) {
    problem.textContent = String(err.message || err);
    problem.hidden = false;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
