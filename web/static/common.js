// Herald dashboards' shared pieces: the API client and its error messages, number and time formats,
// the inline-SVG line chart and small DOM helpers. Plain JS (no libraries, no CDN), loaded before the
// page's own script, which takes what it needs from window.Herald.
"use strict";

window.Herald = (() => {
  const KEY_STORE = "herald.apiKey";

  // The API key is kept in sessionStorage: it goes when the tab closes, and no other tab or later visit
  // finds it. Earlier versions kept it in localStorage; that copy is deleted unread on every load.
  localStorage.removeItem(KEY_STORE);
  const loadKey = () => sessionStorage.getItem(KEY_STORE) || "";
  const saveKey = (key) => sessionStorage.setItem(KEY_STORE, key);
  function clearKey() {
    sessionStorage.removeItem(KEY_STORE);
    localStorage.removeItem(KEY_STORE);
  }

  const COLORS = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#d97706"];
  const SVG_NS = "http://www.w3.org/2000/svg";

  const RATE_METRICS = new Set(["delivery_rate", "bounce_rate", "failure_rate", "open_rate"]);

  const byId = (id) => document.getElementById(id);
  const testId = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

  // ---------------------------------------------------------------- API and error messages

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  const STATUS_TITLES = {
    401: "Not authorised",
    403: "Access denied",
    404: "Not found",
    422: "Invalid request",
    503: "API unavailable",
  };

  function describeError(status, detail) {
    let text = "";
    if (typeof detail === "string") {
      text = detail;
    } else if (Array.isArray(detail)) {
      // FastAPI validation errors: [{loc: ["query", "from"], msg: "..."}]; definitions: ["field: reason"]
      text = detail
        .map((d) =>
          typeof d === "string" ? d : `${(d.loc || []).filter((p) => p !== "query").join(".") || "request"}: ${d.msg}`,
        )
        .join("; ");
    }
    const title = STATUS_TITLES[status] || `HTTP ${status}`;
    const hint = status === 401 ? " (paste a valid API key)" : "";
    return `${title}: ${text || "no details given"}${hint}`;
  }

  /** GET ``path`` with the query ``params`` (empty values left out) and the API ``key``: the JSON body, or
   * an ApiError whose message is the API's reason, ready to show. */
  async function api(path, params = {}, key = "") {
    const url = new URL(path, window.location.origin);
    for (const [name, value] of Object.entries(params)) {
      if (value !== "" && value !== null && value !== undefined) url.searchParams.set(name, value);
    }
    let response;
    try {
      response = await fetch(url, { headers: { "X-Api-Key": key }, cache: "no-store" });
    } catch (err) {
      throw new ApiError(0, `Cannot reach the Herald API: ${err.message}`);
    }
    if (response.ok) return response.json();
    let detail = null;
    try {
      detail = (await response.json()).detail;
    } catch (_) {
      detail = response.statusText;
    }
    throw new ApiError(response.status, describeError(response.status, detail));
  }

  // ---------------------------------------------------------------- formatting

  const fmtInt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
  const fmtPct = (r, digits = 1) => (r === null || r === undefined ? "–" : `${(r * 100).toFixed(digits)} %`);
  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 60e3) return `${(ms / 1000).toFixed(ms < 10e3 ? 2 : 1)} s`;
    if (ms < 3600e3) return `${(ms / 60e3).toFixed(1)} min`;
    return `${(ms / 3600e3).toFixed(1)} h`;
  }
  const pad = (n) => String(n).padStart(2, "0");
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const fmtClock = (d) => `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
  const fmtDay = (d) => `${MONTHS[d.getUTCMonth()]} ${d.getUTCDate()}`;
  const fmtStamp = (d) => `${fmtDay(d)} ${fmtClock(d)}`;
  /** "Dec 1 00:00 – Dec 21 00:00" (UTC) between two ISO times. */
  const fmtSpan = (start, stop) => `${fmtStamp(new Date(start))} – ${fmtStamp(new Date(stop))}`;

  function setValue(id, text, raw) {
    const node = testId(id);
    node.textContent = text;
    if (raw === undefined || raw === null) node.removeAttribute("data-value");
    else node.dataset.value = String(raw);
  }

  // ---------------------------------------------------------------- SVG line chart

  function svg(name, attrs = {}, parent = null) {
    const node = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceStep(span, count) {
    const raw = span / Math.max(count, 1);
    const mag = 10 ** Math.floor(Math.log10(raw));
    const norm = raw / mag;
    return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
  }

  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080].map((m) => m * 60e3);

  /** Draw series [{name, points: [[ms, value|null]], dash?, markers?, zeroDots?, interval?}] over
   * [from, to] into container (zeroDots false: no dot on a zero, for counts that are mostly zero;
   * interval [[ms, low|null, high|null]]: a shaded band around the line, such as a confidence interval);
   * the y axis runs from yMin (default 0) to yMax (default the largest value); ``empty`` is shown when
   * no series (reference lines aside) has a point. ``bands`` [{start, end|null, label, open}] shade
   * spans of time behind the lines (an end of null: still going), each with a line where it starts. */
  function lineChart(container, options) {
    const { series, from, to, yFormat, yMax, yMin = 0, label, empty = "No events in this range", bands = [] } =
      options;
    container.textContent = "";
    const W = 560;
    const H = 220;
    const m = { l: 58, r: 14, t: 26, b: 26 };
    const root = svg("svg", {
      viewBox: `0 0 ${W} ${H}`,
      role: "img",
      "aria-label": label,
      preserveAspectRatio: "xMidYMid meet",
    });
    container.appendChild(root);
    const values = series.flatMap((s) => s.points.map((p) => p[1])).filter((v) => v !== null);
    const xs = series.flatMap((s) => s.points.map((p) => p[0]));
    const x0 = Math.min(from, ...xs);
    const x1 = Math.max(to, ...xs);
    let top = yMax !== undefined ? yMax : Math.max(0, ...values);
    if (top <= yMin) top = yMin + 1;
    const yStep = niceStep(top - yMin, 4);
    top = Math.ceil(top / yStep - 1e-9) * yStep;
    const bottom = Math.floor(yMin / yStep + 1e-9) * yStep;
    const px = (t) => m.l + ((t - x0) / (x1 - x0 || 1)) * (W - m.l - m.r);
    const py = (v) => H - m.b - ((v - bottom) / (top - bottom)) * (H - m.t - m.b);

    const grid = svg("g", { class: "grid" }, root);
    const axis = svg("g", { class: "axis" }, root);
    for (let v = bottom; v <= top + yStep / 2; v += yStep) {
      const y = py(v);
      svg("line", { x1: m.l, x2: W - m.r, y1: y, y2: y }, grid);
      svg("text", { x: m.l - 6, y: y + 4, "text-anchor": "end" }, axis).textContent = yFormat(v);
    }
    const tStep = TIME_STEPS.find((s) => (x1 - x0) / s <= 6) || TIME_STEPS[TIME_STEPS.length - 1];
    const daily = tStep >= 1440 * 60e3;
    for (let t = Math.ceil(x0 / tStep) * tStep; t <= x1; t += tStep) {
      const x = px(t);
      svg("line", { x1: x, x2: x, y1: H - m.b, y2: H - m.b + 4 }, axis);
      const d = new Date(t);
      const anchor = x > W - m.r - 16 ? "end" : "middle"; // keep the last label inside the frame
      svg("text", { x, y: H - m.b + 16, "text-anchor": anchor }, axis).textContent = daily
        ? fmtDay(d)
        : fmtClock(d);
    }
    svg("line", { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, class: "baseline" }, axis);
    svg("line", { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, class: "baseline" }, axis);
    svg("text", { x: 4, y: H - m.b + 16, "text-anchor": "start", class: "unit" }, axis).textContent = "UTC";
    for (const b of bands) {
      const start = Math.max(b.start, x0);
      const end = Math.min(b.end === null ? x1 : b.end, x1);
      if (end < x0 || start > x1) continue;
      const g = svg("g", { class: `band${b.open ? " band-open" : ""}`, "data-testid": "switch-marker" }, root);
      svg("rect", { x: px(start), y: m.t, width: Math.max(2, px(end) - px(start)), height: H - m.t - m.b }, g);
      if (b.start >= x0) svg("line", { x1: px(b.start), x2: px(b.start), y1: m.t, y2: H - m.b }, g);
      svg("title", {}, g).textContent = b.label;
    }

    let drawn = 0;
    series.forEach((s, i) => {
      const color = s.color || COLORS[i % COLORS.length];
      const g = svg("g", { class: "series", "data-series": s.name }, root);
      if (s.interval) intervalBand(s.interval, color, s.name, g, px, py);
      // A null (nothing to divide by) breaks the line instead of pretending to be zero.
      let d = "";
      let pen = false;
      for (const [t, v] of s.points) {
        if (v === null) {
          pen = false;
          continue;
        }
        d += `${pen ? "L" : "M"}${px(t).toFixed(1)},${py(v).toFixed(1)}`;
        pen = true;
      }
      const line = { d, stroke: color, fill: "none", "data-testid": `line-${s.name}` };
      if (s.dash) line["stroke-dasharray"] = s.dash;
      if (d) svg("path", line, g);
      // legend
      const lx = m.l + 6 + i * 128;
      svg("rect", { x: lx, y: 8, width: 10, height: 10, rx: 2, fill: color }, root);
      svg("text", { x: lx + 14, y: 17, class: "legend" }, root).textContent = s.label || s.name;
      if (s.markers === false) return; // a reference line (a target): no points, not counted as data
      const points = s.points.filter((p) => p[1] !== null);
      if (points.length <= 240) {
        for (const [t, v] of points.filter((p) => s.zeroDots !== false || p[1] !== 0)) {
          const c = svg("circle", { cx: px(t).toFixed(1), cy: py(v).toFixed(1), r: 2.6, fill: color }, g);
          svg("title", {}, c).textContent = `${s.label || s.name} ${fmtStamp(new Date(t))}: ${yFormat(v, true)}`;
        }
      }
      drawn += points.length;
    });
    if (!drawn) {
      svg("text", { x: (m.l + W - m.r) / 2, y: (m.t + H - m.b) / 2, "text-anchor": "middle", class: "empty" }, root)
        .textContent = empty;
    }
    root.dataset.points = String(drawn);
    container.dataset.points = String(drawn);
  }

  /** The area between low and high of ``interval`` [[ms, low, high]], broken where either is null. */
  function intervalBand(interval, color, name, parent, px, py) {
    const runs = [[]];
    for (const [t, low, high] of interval) {
      if (low === null || high === null) runs.push([]);
      else runs[runs.length - 1].push([t, low, high]);
    }
    for (const run of runs.filter((r) => r.length)) {
      const upper = run.map(([t, , high]) => `${px(t).toFixed(1)},${py(high).toFixed(1)}`);
      const lower = run.map(([t, low]) => `${px(t).toFixed(1)},${py(low).toFixed(1)}`).reverse();
      const d = `M${upper.join("L")}L${lower.join("L")}Z`;
      svg("path", { d, fill: color, "fill-opacity": 0.15, stroke: "none", class: "interval" }, parent)
        .dataset.testid = `interval-${name}`;
    }
  }

  const pctAxis = (v, exact) => (exact ? fmtPct(v, 2) : `${Math.round(v * 100)}%`);
  const intAxis = (v) => (v >= 1e6 ? `${v / 1e6}M` : v >= 1e4 ? `${v / 1e3}k` : fmtInt(v));
  const msAxis = (v) => fmtMs(v);

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function el(tag, className, text, parent) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  /** An observed or expected value in the metric's unit: rates as %, latency as ms/s, volume as a count. */
  function fmtMetric(metric, value) {
    if (value === null || value === undefined) return "–";
    if (RATE_METRICS.has(metric) || metric.endsWith("_rate")) {
      return fmtPct(value, Math.abs(value) < 0.1 ? 2 : 1);
    }
    if (metric.startsWith("latency")) return fmtMs(value);
    if (metric === "volume") return fmtInt(Math.round(value));
    return Number(value).toPrecision(3);
  }

  /** The URL itself when it is http(s) (absolute or relative to this page), else null: a link from the
   * warehouse is never allowed to run script (javascript:, data:). */
  function safeHref(url) {
    if (!url) return null;
    try {
      return ["http:", "https:"].includes(new URL(url, window.location.href).protocol) ? url : null;
    } catch (_) {
      return null;
    }
  }

  function link(parent, text, url, testid, newTab) {
    const href = safeHref(url);
    if (!href) return;
    const a = document.createElement("a");
    a.textContent = text;
    a.setAttribute("href", href);
    a.dataset.testid = testid;
    if (newTab) {
      a.target = "_blank";
      a.rel = "noopener";
      a.className = "runbook-link";
    }
    parent.appendChild(a);
  }

  function emptyRow(tbody, text, columns, testid) {
    const row = document.createElement("tr");
    const td = cell(row, text, "empty");
    td.colSpan = columns;
    td.dataset.testid = testid;
    tbody.appendChild(row);
  }

  // ---------------------------------------------------------------- panels and status line

  /** Show ``message`` instead of panel-<name>'s numbers (``info``: a hint, not an error). */
  function panelFailed(name, message, info = false) {
    const panel = byId(`panel-${name}`);
    panel.classList.add("failed");
    const msg = panel.querySelector(".panel-msg");
    msg.textContent = message;
    msg.classList.toggle("info", info);
    msg.hidden = false;
    // No stale numbers from a previous tenant or filter may stay visible next to the error.
    for (const node of panel.querySelectorAll(".kpi-value")) {
      node.textContent = "–";
      node.removeAttribute("data-value");
    }
    for (const node of panel.querySelectorAll(".chart")) {
      node.textContent = "";
      node.dataset.points = "0";
    }
    for (const node of panel.querySelectorAll("tbody")) node.textContent = "";
    for (const node of panel.querySelectorAll(".sla-list, .budget-list, .metric-list, .panel-note, .clear-on-error")) {
      node.textContent = "";
    }
    for (const node of panel.querySelectorAll(".count")) node.hidden = true;
  }

  function panelOk(name) {
    const panel = byId(`panel-${name}`);
    panel.classList.remove("failed");
    panel.querySelector(".panel-msg").hidden = true;
  }

  function showBanner(messages) {
    const banner = byId("banner");
    const unique = [...new Set(messages)];
    banner.textContent = unique.join(" · ");
    banner.hidden = unique.length === 0;
  }

  function status(text) {
    byId("status").textContent = text;
  }

  return {
    loadKey,
    saveKey,
    clearKey,
    COLORS,
    byId,
    testId,
    ApiError,
    api,
    fmtInt,
    fmtPct,
    fmtMs,
    pad,
    fmtClock,
    fmtDay,
    fmtStamp,
    fmtSpan,
    setValue,
    svg,
    lineChart,
    pctAxis,
    intAxis,
    msAxis,
    cell,
    el,
    emptyRow,
    fmtMetric,
    safeHref,
    link,
    panelFailed,
    panelOk,
    showBanner,
    status,
  };
})();
