// Herald experiment page (/dashboard/experiments/{id}?tenant=…): the definition, per-variant counts,
// every metric against the control (effect, CIs, significance, split check, power) and the relative
// effect over time, from /api/v1/tenants/{tenant}/experiments/{id} and its /history and /changes.
// The API key is the dashboard's (kept for this tab only); the API does every access check.
"use strict";

(() => {
  const {
    loadKey, saveKey, clearKey, byId, testId, api: request, fmtInt, fmtPct, fmtMs, fmtClock, fmtStamp, fmtSpan,
    lineChart, cell, el, emptyRow, panelFailed, panelOk, showBanner, status,
  } = window.Herald;

  const PANELS = ["definition", "metrics", "changes"];
  const COUNTS = ["exposed", "delivered", "opened", "clicked", "replied", "unsubscribed"];
  const NOT_YET = "No results stored yet"; // the experiments job stores them while exposures arrive

  const params = new URLSearchParams(window.location.search);
  const state = {
    key: "",
    tenant: params.get("tenant") || "",
    id: decodeURIComponent(window.location.pathname.split("/").filter(Boolean).pop() || ""),
    refreshS: 10,
    timer: null,
    loading: false,
    generation: 0,
  };
  const api = (path, query = {}) => request(path, query, state.key);
  const base = () =>
    `/api/v1/tenants/${encodeURIComponent(state.tenant)}/experiments/${encodeURIComponent(state.id)}`;

  // ---------------------------------------------------------------- formats

  const known = (v) => v !== null && v !== undefined;
  /** A relative effect: 0.123 -> "+12.3 %". */
  const fmtEffect = (r) => (known(r) ? `${r >= 0 ? "+" : "−"}${Math.abs(r * 100).toFixed(1)} %` : "–");
  const fmtInterval = (low, high) => (known(low) && known(high) ? `${fmtEffect(low)} … ${fmtEffect(high)}` : "–");
  const fmtP = (p) => (known(p) ? (p < 0.001 ? "< 0.001" : p.toFixed(3)) : "–");
  const effectAxis = (v, exact) => (exact ? fmtEffect(v) : `${v > 0 ? "+" : ""}${Number((v * 100).toFixed(1))}%`);

  // ---------------------------------------------------------------- definition and variants

  function renderDefinition(report) {
    const d = report.definition;
    testId("experiment-title").textContent = `${d.id} · ${d.template}`;
    const badge = testId("experiment-state");
    badge.textContent = report.state;
    badge.className = `badge state-${report.state}`;
    badge.hidden = false;
    const source = report.source === "file"
      ? "defined in the policies file"
      : `created through the API · version ${report.version}` +
        (report.changed_by ? ` · last changed by ${report.changed_by} ${fmtStamp(new Date(report.changed_at))} UTC` : "");
    testId("experiment-source").textContent = source;
    testId("experiment-description").textContent = d.description || "";
    const dl = testId("definition");
    dl.textContent = "";
    const items = [
      ["Window (UTC)", fmtSpan(d.start, d.stop)],
      ["Segment", d.segment || "everyone"],
      ["Primary metric", d.primary_metric],
      ["Guardrails", d.guardrail_metrics.join(", ") || "none"],
      ["MDE", fmtPct(d.mde, 1)],
      ["Alpha", String(d.alpha)],
      ["Layer", d.layer ? `${d.layer.name} [${d.layer.buckets[0]}, ${d.layer.buckets[1]})` : "none"],
      ["Holdout", fmtPct(d.holdout, 1)],
    ];
    for (const [label, value] of items) {
      const box = el("div", "", undefined, dl);
      el("dt", "", label, box);
      el("dd", "", value, box);
    }

    const tbody = testId("variants-table").querySelector("tbody");
    tbody.textContent = "";
    for (const v of report.variants) {
      const row = document.createElement("tr");
      row.dataset.testid = "variant-row";
      row.dataset.variant = v.name;
      cell(row, v.name, "name");
      cell(row, String(v.template_version));
      cell(row, String(v.weight));
      for (const c of COUNTS) {
        const td = cell(row, fmtInt(v[c]));
        td.dataset.testid = `variant-${c}`;
        td.dataset.value = String(v[c]);
      }
      cell(row, fmtMs(v.latency_mean_ms));
      tbody.appendChild(row);
    }
  }

  // ---------------------------------------------------------------- metrics and effect over time

  function resultRow(r) {
    const row = document.createElement("tr");
    row.dataset.testid = "result-row";
    row.dataset.variant = r.variant;
    cell(row, r.variant, "name");
    const effect = cell(row, fmtEffect(r.relative_effect));
    effect.dataset.testid = "effect";
    if (known(r.relative_effect)) effect.dataset.value = String(r.relative_effect);
    cell(row, fmtInterval(r.ci_low, r.ci_high)).dataset.testid = "ci";
    const seq = cell(row, fmtInterval(r.seq_ci_low, r.seq_ci_high));
    seq.dataset.testid = "seq-ci";
    seq.title = `always-valid sequential CI; decision: ${r.seq_decision || "none"}`;
    cell(row, fmtP(r.adjusted_p_value));
    cell(row, fmtPct(r.chance_to_win, 1));
    const significant = cell(row, "");
    significant.dataset.testid = "significant";
    significant.dataset.value = String(r.significant);
    significant.appendChild(el("span", `badge ${r.significant ? "sig-yes" : ""}`, r.significant ? "yes" : "no"));
    cell(row, fmtPct(r.power, 0)).dataset.testid = "power";
    const remaining = r.remaining_sample_size;
    const left = cell(row, known(remaining) ? (remaining > 0 ? fmtInt(remaining) : "reached") : "–");
    left.dataset.testid = "remaining-sample";
    if (known(remaining)) left.dataset.value = String(remaining);
    return row;
  }

  function effectChart(container, metric, points) {
    const mine = points.filter((p) => p.metric === metric && !p.is_control);
    const variants = [...new Set(mine.map((p) => p.variant))];
    const series = variants.map((name) => {
      const own = mine.filter((p) => p.variant === name);
      return {
        name,
        points: own.map((p) => [p.computed_at_ms, p.relative_effect]),
        interval: own.map((p) => [p.computed_at_ms, p.seq_ci_low, p.seq_ci_high]),
      };
    });
    const times = mine.map((p) => p.computed_at_ms);
    const values = mine.flatMap((p) => [p.relative_effect, p.seq_ci_low, p.seq_ci_high]).filter(known);
    let from = times.length ? Math.min(...times) : Date.now() - 3600e3;
    let to = times.length ? Math.max(...times) : Date.now();
    if (to - from < 60e3) {
      from -= 30 * 60e3;
      to += 30 * 60e3;
    }
    series.push({
      name: "zero",
      label: "no effect",
      color: "#6b7280",
      dash: "4 4",
      markers: false,
      points: [[from, 0], [to, 0]],
    });
    lineChart(container, {
      from,
      to,
      series,
      label: `Relative effect of ${metric} over time with its sequential CI`,
      yFormat: effectAxis,
      yMin: Math.min(0, ...values),
      yMax: Math.max(0, ...values),
      empty: NOT_YET,
    });
  }

  function metricCard(metric, result, primary, points) {
    const card = el("article", `metric-card${primary ? " primary" : ""}`);
    card.dataset.testid = "metric-card";
    card.dataset.metric = metric;
    card.dataset.status = result.status;
    const head = el("header", "metric-head", undefined, card);
    el("h3", "", metric, head);
    el("span", "kpi-sub", `${primary ? "primary" : "guardrail"} · ${result.better} is better`, head);
    if (result.status !== "ok") {
      const waiting = el("p", "metric-waiting", `Waiting for data: ${result.reason || "not computed yet"}.`, card);
      waiting.dataset.testid = "metric-waiting";
    } else {
      const srm = el(
        "span",
        `badge ${result.srm_flag ? "sev-critical" : "srm-ok"}`,
        result.srm_flag ? "sample ratio mismatch" : "split ok",
        head,
      );
      srm.dataset.testid = "srm-flag";
      srm.dataset.flag = String(Boolean(result.srm_flag));
      if (known(result.srm_p_value)) srm.dataset.value = String(result.srm_p_value);
      srm.title = `sample-ratio-mismatch check against the planned weights: p = ${fmtP(result.srm_p_value)}`;
      const table = el("table", "numbers", undefined, card);
      table.dataset.testid = "metric-table";
      const header = el("tr", "", undefined, el("thead", "", undefined, table));
      for (const label of ["variant", "effect", `${Math.round((1 - result.alpha) * 100)} % CI`, "sequential CI",
        "p (adjusted)", "chance to beat control", "significant", "power", "sample still needed"]) {
        el("th", "", label, header);
      }
      const tbody = el("tbody", "", undefined, table);
      for (const r of result.results) tbody.appendChild(resultRow(r));
    }
    const figure = el("figure", "", undefined, card);
    el("figcaption", "", "Relative effect against the control per computation (band: sequential CI)", figure);
    const chart = el("div", "chart", undefined, figure);
    chart.dataset.testid = "effect-chart";
    chart.dataset.metric = metric;
    effectChart(chart, metric, points);
    return card;
  }

  function renderMetrics(report, history) {
    const through = report.data_through_ms;
    testId("metrics-note").textContent = through
      ? `data through ${fmtStamp(new Date(through))} UTC · ${history.points.length ? "" : "no stored results yet · "}` +
        "intent to treat: the unit is the exposed notification"
      : "no exposures yet";
    const list = testId("metric-list");
    list.textContent = "";
    for (const [metric, result] of Object.entries(report.metrics)) {
      list.appendChild(metricCard(metric, result, metric === report.primary_metric, history.points));
    }
  }

  // ---------------------------------------------------------------- changes

  function renderChanges(body) {
    const tbody = testId("changes-table").querySelector("tbody");
    tbody.textContent = "";
    if (!body.changes.length) {
      const text = body.source === "file" ? "Defined in the policies file: change it there" : "No changes";
      emptyRow(tbody, text, 5, "changes-empty");
    }
    for (const c of body.changes) {
      const row = document.createElement("tr");
      row.dataset.testid = "change-row";
      row.dataset.action = c.action;
      cell(row, `v${c.version}`, "name");
      cell(row, c.action);
      cell(row, fmtStamp(new Date(c.changed_at)), "when");
      cell(row, c.actor);
      cell(row, c.note || "—", "classes");
      tbody.appendChild(row);
    }
  }

  // ---------------------------------------------------------------- loading

  async function refresh() {
    if (!state.key) return;
    if (!state.tenant) {
      const message = "Which tenant? Open this page with ?tenant=<tenant> (the dashboard's experiments panel links it)";
      showBanner([message]);
      for (const name of PANELS) panelFailed(name, message);
      document.body.dataset.state = "error";
      return;
    }
    const generation = ++state.generation;
    state.loading = true;
    status("Loading…");
    let results;
    try {
      results = await Promise.allSettled([api(base()), api(`${base()}/history`), api(`${base()}/changes`)]);
    } finally {
      if (generation === state.generation) state.loading = false;
    }
    if (generation !== state.generation) return; // signed out while the answers were on their way
    const [report, history, changes] = results;
    const errors = results.filter((r) => r.status === "rejected").map((r) => r.reason.message);
    if (report.status === "fulfilled") {
      panelOk("definition");
      renderDefinition(report.value);
    } else {
      panelFailed("definition", report.reason.message);
      testId("experiment-state").hidden = true;
    }
    if (report.status === "fulfilled" && history.status === "fulfilled") {
      panelOk("metrics");
      renderMetrics(report.value, history.value);
    } else {
      panelFailed("metrics", (report.status === "rejected" ? report : history).reason.message);
    }
    if (changes.status === "fulfilled") {
      panelOk("changes");
      renderChanges(changes.value);
    } else {
      panelFailed("changes", changes.reason.message);
    }
    showBanner(errors);
    const now = new Date();
    status(errors.length ? `Not loaded at ${fmtClock(now)} UTC` : `Updated ${fmtClock(now)} UTC · refreshes every ${state.refreshS} s`);
    byId("back").href = `/dashboard?tenant=${encodeURIComponent(state.tenant)}`;
    document.body.dataset.state = errors.length ? "error" : "ok";
    document.body.dataset.updatedAt = String(now.getTime());
  }

  function connect() {
    const key = byId("api-key").value.trim();
    if (!key) {
      showBanner(["Paste an API key first."]);
      return;
    }
    state.key = key;
    saveKey(key);
    byId("sign-out").disabled = false;
    refresh();
    clearInterval(state.timer);
    state.timer = setInterval(() => {
      if (!document.hidden && !state.loading) refresh();
    }, state.refreshS * 1000);
  }

  const SIGNED_OUT = "Paste an API key to see this experiment.";

  /** Back to the page as loaded without a key: the key gone from storage and memory, no timer, nothing
   * of the experiment left on screen, and an answer still on its way drawn nowhere (see refresh). */
  function signOut() {
    clearKey();
    state.key = "";
    state.generation += 1;
    state.loading = false;
    clearInterval(state.timer);
    state.timer = null;
    byId("api-key").value = "";
    for (const name of PANELS) panelFailed(name, SIGNED_OUT, true);
    testId("experiment-title").textContent = state.id || "Experiment";
    testId("experiment-state").hidden = true;
    showBanner([]);
    status("Paste an API key to start.");
    byId("sign-out").disabled = true;
    document.body.dataset.state = "signed-out";
  }

  async function init() {
    testId("experiment-title").textContent = state.id || "Experiment";
    byId("back").href = state.tenant ? `/dashboard?tenant=${encodeURIComponent(state.tenant)}` : "/dashboard";
    byId("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      connect();
    });
    byId("sign-out").addEventListener("click", signOut);
    for (const name of PANELS) panelFailed(name, SIGNED_OUT, true);
    try {
      const response = await fetch("/dashboard/config.json", { cache: "no-store" });
      if (response.ok) state.refreshS = (await response.json()).refresh_s || state.refreshS;
    } catch (_) {
      /* keep the default refresh */
    }
    const saved = loadKey();
    if (saved) {
      byId("api-key").value = saved;
      connect();
    }
  }

  init();
})();
