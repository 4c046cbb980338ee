// The page's logic: the form, the service's JSON routes, the tables and an SVG chart drawn here.
// Plain DOM, no library: everything it loads comes from this service.
"use strict";

const HORIZON = 64; // trading days before and after the date that the chart shows
const KEY = "fascl-api-key"; // sessionStorage: the key lives as long as the tab
const COLORS = ["#0b5cad", "#c2410c", "#15803d", "#7e22ce", "#b91c1c", "#0e7490", "#a16207",
  "#be185d", "#4d7c0f", "#1e3a8a", "#9a3412", "#065f46"];
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
let dates = []; // the indexed dates, ISO, ascending
let waitingForKey = null; // resolves when the user gives a key after a 401

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `the service answered ${status}`);
    this.status = status;
    this.code = error.code;
  }
}

// A GET of the service's JSON, relative to the page (so it works behind a path prefix). A 401
// asks for a key once, keeps it for the tab, and retries.
async function api(path) {
  for (;;) {
    const headers = { Accept: "application/json" };
    const key = sessionStorage.getItem(KEY);
    if (key) headers["X-API-Key"] = key;
    const response = await fetch(path.replace(/^\//, ""), { headers });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (response.status === 401) {
      sessionStorage.removeItem(KEY);
      await askForKey(key ? "That key was refused; enter another." : "");
      continue;
    }
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }
}

function askForKey(message) {
  const form = $("key-form");
  form.hidden = false;
  setStatus(message || "This service needs an API key.", !!message);
  $("api-key").focus();
  if (!waitingForKey) {
    waitingForKey = new Promise((resolve) => {
      form.addEventListener("submit", function once(event) {
        event.preventDefault();
        sessionStorage.setItem(KEY, $("api-key").value.trim());
        form.removeEventListener("submit", once);
        form.hidden = true;
        waitingForKey = null;
        setStatus("");
        resolve();
      });
    });
  }
  return waitingForKey;
}

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

const fmt = (x, digits = 3) => (x === null || x === undefined ? "—" : Number(x).toFixed(digits));
const query = (params) => new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== null));

// ------------------------------------------------------------------ the form
function latestIndexedOnOrBefore(day) {
  let lo = 0, hi = dates.length - 1, found = null;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (dates[mid] <= day) { found = mid; lo = mid + 1; } else hi = mid - 1;
  }
  return found;
}

let completion = null;
function completeTicker() {
  clearTimeout(completion);
  const q = $("ticker").value.trim();
  if (!q) return;
  completion = setTimeout(async () => {
    try {
      const page = await api(`/assets?${query({ q, limit: 20 })}`);
      const list = $("ticker-options");
      list.replaceChildren(...page.items.map((a) => el("option", { value: a.ticker, label: `${a.ticker} · ${a.name}` })));
    } catch (e) { /* completion is a help, not a requirement */ }
  }, 150);
}

async function init() {
  $("ticker").addEventListener("input", completeTicker);
  $("query").addEventListener("submit", (event) => { event.preventDefault(); search(); });
  $("track-load").addEventListener("click", loadTrackRecord);
  $("date").addEventListener("change", snapDate);
  try {
    const [indexed, filters] = [await api("/dates"), await api("/filters")];
    dates = indexed.dates;
    const input = $("date");
    input.min = indexed.first;
    input.max = indexed.last;
    input.value = indexed.last;
    $("version").textContent = `index ${indexed.index_version}: ${indexed.count} dates, ${indexed.first} to ${indexed.last}`;
    for (const [id, values] of [["sector", filters.sectors], ["exchange", filters.exchanges]]) {
      $(id).append(...values.map((v) => el("option", { value: v }, v)));
    }
    const first = await api(`/assets?${query({ limit: 1 })}`);
    if (first.items.length && !$("ticker").value) $("ticker").placeholder = first.items[0].ticker;
    document.body.dataset.ready = "true";
  } catch (e) {
    setStatus(`Cannot reach the service: ${e.message}`, true);
  }
}

// A date between indexed ones means the last indexed date before it, as the service answers.
function snapDate() {
  const input = $("date");
  if (!input.value || !dates.length) return;
  const i = latestIndexedOnOrBefore(input.value);
  if (i === null) {
    setStatus(`The first indexed date is ${dates[0]}.`, true);
    input.value = dates[0];
  } else if (dates[i] !== input.value) {
    setStatus(`${input.value} is not an indexed trading date: using ${dates[i]}, the last one before it.`);
    input.value = dates[i];
  }
}

function formParams() {
  return {
    ticker: $("ticker").value.trim().toUpperCase() || $("ticker").placeholder,
    date: $("date").value,
    k: $("k").value,
    sector: $("sector").value,
    exchange: $("exchange").value,
    exclude_same_sector: $("exclude-same-sector").checked ? "true" : "",
  };
}

// ------------------------------------------------------------------ a search
async function search() {
  const { ticker, ...params } = formParams();
  if (!ticker) { setStatus("Enter a ticker.", true); $("ticker").focus(); return; }
  const button = $("submit");
  button.disabled = true;
  setStatus(`Searching peers of ${ticker}…`);
  document.body.dataset.state = "loading";
  try {
    const path = encodeURIComponent(ticker);
    const q = query({ ...params, include_realized: "true" });
    const [model, pearson] = await Promise.all([
      api(`/similar/${path}?${q}`),
      api(`/similar/${path}/pearson?${q}`).catch((e) => e),
    ]);
    $("title-ticker").textContent = model.query.ticker;
    $("title-date").textContent = model.query.as_of;
    $("results").classList.add("has-results");
    fillTable($("model-table"), model.results);
    if (pearson instanceof Error) {
      fillTable($("pearson-table"), []);
      $("mean-realised").textContent = `Pearson unavailable: ${pearson.message}`;
    } else {
      fillTable($("pearson-table"), pearson.results);
      $("mean-realised").textContent = meanRealised(model.results, pearson.results);
    }
    setStatus(`${model.results.length} peers of ${model.query.ticker} (${model.query.name}) as of ${model.query.as_of}; drawing prices…`);
    await drawChart(model);
    setStatus(`${model.results.length} peers of ${model.query.ticker} (${model.query.name}) as of ${model.query.as_of}.`);
    document.body.dataset.state = "done";
  } catch (e) {
    setStatus(e.message, true);
    document.body.dataset.state = "error";
  } finally {
    button.disabled = false;
  }
}

function fillTable(table, rows) {
  const body = table.tBodies[0];
  body.replaceChildren(...rows.map((r) => {
    const tr = el("tr", { "data-ticker": r.ticker });
    tr.append(
      el("td", { class: "num" }, String(r.rank)),
      el("td", {}, r.ticker),
      el("td", { class: "name", title: r.name }, r.name),
      el("td", {}, r.sector),
      el("td", { class: "num" }, fmt(r.score)),
      el("td", { class: "num" }, fmt(r.realized_correlation)),
    );
    return tr;
  }));
}

function meanRealised(model, pearson) {
  const mean = (rows) => {
    const known = rows.map((r) => r.realized_correlation).filter((x) => x !== null && x !== undefined);
    return known.length ? known.reduce((a, b) => a + b, 0) / known.length : null;
  };
  const m = mean(model), p = mean(pearson);
  if (m === null || p === null) return "The next 64 trading days are not known yet: no realised correlations.";
  return `Mean realised correlation of the peers: model ${fmt(m)}, Pearson ${fmt(p)}.`;
}

// ------------------------------------------------------------------ the chart
// One asset's closes over the 64 trading days before the date and up to 64 after, normalised to 1
// at the date; null where the service has none.
async function pricePath(ticker, asOf) {
  const t = encodeURIComponent(ticker);
  const at = dates.indexOf(asOf);
  const requests = [api(`/assets/${t}/prices?${query({ to: asOf })}`)];
  if (at >= 0 && at < dates.length - 1) {
    const end = dates[Math.min(at + HORIZON, dates.length - 1)];
    requests.push(api(`/assets/${t}/prices?${query({ from: asOf, to: end })}`));
  }
  try {
    const parts = await Promise.all(requests);
    const points = new Map();
    for (const part of parts) for (const p of part.points) points.set(p.date, p.close);
    const base = points.get(asOf) ?? parts[0].points[parts[0].points.length - 1].close;
    return [...points.entries()].sort().map(([date, close]) => ({ date, value: close / base }));
  } catch (e) {
    return null;
  }
}

async function drawChart(model) {
  const asOf = model.query.as_of;
  const tickers = [model.query.ticker, ...model.results.map((r) => r.ticker)];
  const paths = await Promise.all(tickers.map((t) => pricePath(t, asOf)));
  // The x axis: every date any line has, so a missing bar leaves a gap in one line only.
  const axis = [...new Set(paths.flatMap((p) => (p ? p.map((q) => q.date) : [])))].sort();
  const x0 = axis.indexOf(asOf);
  const values = paths.flatMap((p) => (p ? p.map((q) => q.value) : []));
  const W = 640, H = 340, L = 44, R = 10, T = 14, B = 28;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-title chart-desc" });
  chart.append(
    svg("title", { id: "chart-title" }, `${tickers[0]} and its peers, normalised to 1 on ${asOf}`),
    svg("desc", { id: "chart-desc" }, `Closes over the ${HORIZON} trading days before ${asOf} and, where known, the ${HORIZON} after; the dashed line marks the date.`),
  );
  $("chart").replaceChildren(chart);
  $("legend").replaceChildren();
  if (!values.length) return;
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi - lo < 1e-9) { lo -= 0.05; hi += 0.05; }
  const x = (i) => L + (i / Math.max(axis.length - 1, 1)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = lo + ((hi - lo) * i) / 4;
    chart.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }),
      svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" }, v.toFixed(2)));
  }
  chart.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  const labels = [[0, axis[0]], [x0, asOf], [axis.length - 1, axis[axis.length - 1]]];
  for (const [i, label] of labels) {
    if (i < 0) continue;
    const anchor = i === 0 ? "start" : i === axis.length - 1 ? "end" : "middle";
    chart.append(svg("text", { x: x(i), y: H - B + 16, "text-anchor": anchor }, label));
  }
  if (x0 >= 0) chart.append(svg("line", { class: "mark", x1: x(x0), x2: x(x0), y1: T, y2: H - B }));
  const position = new Map(axis.map((d, i) => [d, i]));
  // Peers first and the query last, so that its thicker line is drawn on top.
  const order = [...tickers.keys()].slice(1).concat([0]);
  for (const i of order) {
    if (!paths[i] || !paths[i].length) continue;
    const d = paths[i].map((p, j) => `${j ? "L" : "M"}${x(position.get(p.date)).toFixed(1)},${y(p.value).toFixed(1)}`).join("");
    const line = svg("path", { d, class: i === 0 ? "series query" : "series", stroke: COLORS[i % COLORS.length], "data-ticker": tickers[i], "data-rank": String(i) });
    line.append(svg("title", {}, tickers[i]));
    chart.append(line);
  }
  // The legend in rank order, the query first.
  $("legend").replaceChildren(...tickers.map((t, i) => {
    const item = el("li", { "data-ticker": t });
    const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
    swatch.style.background = COLORS[i % COLORS.length];
    item.append(swatch, document.createTextNode(i === 0 ? `${t} (query)` : paths[i] ? t : `${t} (no prices)`));
    return item;
  }));
}

// ------------------------------------------------------------------ the track record
async function loadTrackRecord() {
  const k = $("k").value || "10";
  const button = $("track-load");
  button.disabled = true;
  $("track-body").replaceChildren(el("p", { class: "muted" }, `Computing the track record at k = ${k} (once per index version)…`));
  try {
    const record = await api(`/track-record?${query({ k })}`);
    const table = el("table", { id: "track-table" });
    table.append(el("caption", {}, `FRC@${record.k} by month`));
    const head = el("tr");
    for (const name of ["Month", "Dates", "Queries", "Model", "Pearson", "Random"]) head.append(el("th", { scope: "col" }, name));
    table.append(el("thead"));
    table.tHead.append(head);
    const body = el("tbody");
    const row = (label, r, cls) => {
      const tr = el("tr", cls ? { class: cls } : {});
      tr.append(el("th", { scope: "row" }, label), el("td", { class: "num" }, String(r.dates)),
        el("td", { class: "num" }, String(r.queries)), el("td", { class: "num" }, fmt(r.model)),
        el("td", { class: "num" }, fmt(r.pearson)), el("td", { class: "num" }, fmt(r.random)));
      return tr;
    };
    for (const m of record.months) body.append(row(m.month, m));
    if (record.overall) body.append(row("All", record.overall, "overall"));
    table.append(body);
    const sample = el("p", { class: "muted" }, `Sample: ${record.sample.description}.`);
    $("track-body").replaceChildren(record.months.length ? table : el("p", {}, "No indexed date has a known 64-day future yet."), sample);
  } catch (e) {
    $("track-body").replaceChildren(el("p", { class: "muted" }, e.message));
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", init);
