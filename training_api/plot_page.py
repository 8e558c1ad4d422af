"""The plot as one self-contained HTML page: the data as inline JSON, an inline script that
draws it as SVG. No CDN, font or image is fetched, so it opens offline and in air-gapped
plants; the page's Content-Security-Policy forbids any other source."""

from __future__ import annotations

import html
import json
import re

from training_api.plot import PlotData

CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>__TITLE__</title>
<style>
 body{font:14px system-ui,sans-serif;margin:16px;color:#222}
 h1{font-size:18px;margin:0 0 4px} .sub{color:#666;margin-bottom:8px}
 .warn{background:#fff3cd;border:1px solid #e0c36c;padding:6px 10px;margin:8px 0}
 #chart{border:1px solid #ddd} table{border-collapse:collapse;margin-top:12px}
 td,th{border:1px solid #ddd;padding:3px 8px;text-align:left} td.n{text-align:right}
 .legend span{margin-right:16px} .sw{display:inline-block;width:14px;height:10px;margin-right:4px}
</style></head><body>
<h1>__TITLE__</h1>
<div class="sub" id="subtitle"></div>
<div id="warning"></div>
<div class="legend"><span><i class="sw" style="background:#3b6fb6"></i>training data
(min/max per pixel)</span><span><i class="sw" style="background:#1a9e4a"></i>centre</span>
<span><i class="sw" style="background:#f4c7c3"></i>threshold band</span>
<span><i class="sw" style="background:#d62728"></i>flagged points</span></div>
<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="1240" height="460"></svg>
<table id="metrics"><tr><th>metric</th><th>value</th></tr></table>
<script type="application/json" id="plot-data">__DATA__</script>
<script>
(function () {
  const d = JSON.parse(document.getElementById("plot-data").textContent);
  const NS = "http://www.w3.org/2000/svg", svg = document.getElementById("chart");
  const W = 1240, H = 460, L = 70, R = 20, T = 16, B = 36;
  const el = (name, attrs, text) => {
    const e = document.createElementNS(NS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e); return e;
  };
  const fmt = (x) => Number.isInteger(x) ? x.toString()
    : Math.abs(x) >= 1e4 || (x !== 0 && Math.abs(x) < 1e-3)
    ? x.toExponential(3) : Number(x.toPrecision(5)).toString();
  document.getElementById("subtitle").textContent =
    `${d.model} v${d.version} (${d.aliases.join(", ") || "no alias"}) · ${d.algorithm} · ` +
    `${d.points} points · ${d.flagged_total} flagged · registered ${d.created_at}`;
  if (!d.data_verified) document.getElementById("warning").innerHTML =
    '<div class="warn">The stored data differs from this version\\'s training set ' +
    '(data_sha256); the closest reconstruction is shown.</div>';
  const e = d.envelope, t = e.t;
  const lows = e.low.concat([d.band.low, d.centre]), highs = e.high.concat([d.band.high]);
  let y0 = Math.min(...lows), y1 = Math.max(...highs);
  const pad = (y1 - y0) * 0.05 || 1; y0 -= pad; y1 += pad;
  const t0 = t.length ? t[0] : 0, t1 = t.length > 1 ? t[t.length - 1] : t0 + 1;
  const X = (x) => L + (x - t0) / (t1 - t0) * (W - L - R);
  const Y = (y) => T + (y1 - y) / (y1 - y0) * (H - T - B);
  el("rect", {id: "band", x: L, width: W - L - R, y: Y(d.band.high),
    height: Math.max(0, Y(d.band.low) - Y(d.band.high)), fill: "#f4c7c3", "fill-opacity": 0.6});
  for (let i = 0; i <= 5; i++) {
    const v = y0 + (y1 - y0) * i / 5, y = Y(v);
    el("line", {x1: L, x2: W - R, y1: y, y2: y, stroke: "#eee"});
    el("text", {x: L - 6, y: y + 4, "text-anchor": "end", "font-size": 11}, fmt(v));
  }
  for (let i = 0; i <= 6; i++) {
    const v = t0 + (t1 - t0) * i / 6, x = X(v);
    const anchor = i === 0 ? "start" : i === 6 ? "end" : "middle";
    el("text", {x: x, y: H - 12, "text-anchor": anchor, "font-size": 11},
      new Date(v * 1000).toISOString().slice(0, 16).replace("T", " "));
  }
  const parts = [];
  for (let i = 0; i < t.length; i++) {
    const x = X(t[i]).toFixed(1);
    parts.push(`${x},${Y(e.low[i]).toFixed(1)}`, `${x},${Y(e.high[i]).toFixed(1)}`);
  }
  const path = el("path", {id: "series", d: parts.length ? "M" + parts.join("L") : "",
    fill: "none", stroke: "#3b6fb6", "stroke-width": 1});
  path.dataset.points = parts.length;
  el("line", {id: "centre", x1: L, x2: W - R, y1: Y(d.centre), y2: Y(d.centre),
    stroke: "#1a9e4a", "stroke-width": 1.5});
  const f = d.flagged;
  for (let i = 0; i < f.t.length; i++) {
    el("circle", {class: "flagged", cx: X(f.t[i]), cy: Y(f.v[i]), r: 2.5, fill: "#d62728"});
  }
  el("rect", {x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#999"});
  const table = document.getElementById("metrics");
  const rows = Object.entries(d.metrics).map(([k, v]) => [k, fmt(v)])
    .concat(Object.entries(d.params).map(([k, v]) => ["param " + k, v]));
  for (const [k, v] of rows) {
    const tr = table.insertRow(); tr.insertCell().textContent = k;
    const c = tr.insertCell(); c.textContent = v; c.className = "n";
  }
  svg.dataset.rendered = "true";
})();
</script></body></html>
"""


def render(plot: PlotData) -> str:
    doc = plot.doc
    title = f"{doc['series_id']} · version {doc['version']}"
    # "<" never appears raw inside the script element, so no data can close it.
    data = json.dumps(doc, allow_nan=False).replace("<", "\\u003c")
    parts = {"__TITLE__": html.escape(title), "__DATA__": data}
    # one pass over the template, so a series id spelling a marker is never substituted
    return re.sub("__TITLE__|__DATA__", lambda m: parts[m.group(0)], _PAGE)
