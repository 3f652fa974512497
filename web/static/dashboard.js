// Herald delivery dashboard: vanilla JS over /api/v1, charts drawn as inline SVG (no libraries, no CDN).
"use strict";

(() => {
  const {
    loadKey, saveKey, clearKey, byId, testId, api: request, fmtInt, fmtPct, fmtMs, pad, fmtClock, fmtStamp,
    fmtSpan, setValue, lineChart, pctAxis, intAxis, msAxis, cell, el, emptyRow, fmtMetric, link, panelFailed,
    panelOk, showBanner, status,
  } = window.Herald;
  const RANGES = {
    "1h": { ms: 3600e3, bucket: "minute" },
    "6h": { ms: 6 * 3600e3, bucket: "minute" },
    "24h": { ms: 24 * 3600e3, bucket: "hour" },
    "7d": { ms: 7 * 86400e3, bucket: "hour" },
  };
  const BUCKET_MS = { minute: 60e3, hour: 3600e3 };
  const PANELS = [
    "alerts", "delivery", "engagement", "latency", "providers", "failover", "sla", "budgets", "experiments",
  ];
  // Open and resolved alerts are asked for separately, so a long resolved history never pushes an
  // open alert out of the list.
  const ALERT_LIMITS = { open: 100, resolved: 50 };

  const state = {
    key: "",
    tenants: [],
    tenant: "",
    config: { refresh_s: 10, runbooks: {} },
    generation: 0,
    loading: false,
    timer: null,
    providers: new Set(),
  };

  const api = (path, params = {}) => request(path, params, state.key);
  const controls = {
    key: byId("api-key"),
    tenant: byId("tenant"),
    channel: byId("channel"),
    provider: byId("provider"),
    range: byId("range"),
  };

  // ---------------------------------------------------------------- panels

  const asPoints = (series, field) => series.map((p) => [Date.parse(p.bucket), p[field]]);

  function renderDelivery(body, span) {
    const t = body.totals;
    setValue("total-delivered", fmtInt(t.delivered), t.delivered);
    setValue("total-dispatched", fmtInt(t.dispatched), t.dispatched);
    setValue("total-errors", fmtInt(t.failed + t.bounced), t.failed + t.bounced);
    setValue("delivery-rate", fmtPct(t.delivery_rate), t.delivery_rate);
    const panel = byId("panel-delivery");
    panel.dataset.from = body.from;
    panel.dataset.to = body.to;
    lineChart(testId("chart-delivery-rate"), {
      ...span,
      label: "Delivery rate over time",
      series: [{ name: "delivery_rate", label: "delivery rate", points: asPoints(body.series, "delivery_rate") }],
      yFormat: pctAxis,
      // Per bucket the rate can pass 100 %: receipts land in a later minute than their dispatch.
      yMax: Math.max(1, ...body.series.map((p) => p.delivery_rate || 0)),
    });
    lineChart(testId("chart-volume"), {
      ...span,
      label: "Volume over time",
      series: [
        { name: "dispatched", points: asPoints(body.series, "dispatched") },
        { name: "delivered", points: asPoints(body.series, "delivered") },
        {
          name: "errors",
          label: "failed + bounced",
          points: body.series.map((p) => [Date.parse(p.bucket), p.failed + p.bounced]),
        },
      ],
      yFormat: intAxis,
    });
  }

  function renderEngagement(body, span) {
    const t = body.totals;
    setValue("open-rate", fmtPct(t.open_rate), t.open_rate);
    setValue("click-rate", fmtPct(t.click_rate), t.click_rate);
    setValue("total-opened", fmtInt(t.opened), t.opened);
    const top = Math.max(0.05, ...body.series.flatMap((p) => [p.open_rate || 0, p.click_rate || 0]));
    lineChart(testId("chart-engagement"), {
      ...span,
      label: "Open and click rate over time",
      series: [
        { name: "open_rate", label: "open rate", points: asPoints(body.series, "open_rate") },
        { name: "click_rate", label: "click rate", points: asPoints(body.series, "click_rate") },
      ],
      yFormat: pctAxis,
      yMax: top,
    });
  }

  function renderLatency(body, span) {
    const tbody = testId("latency-table").querySelector("tbody");
    tbody.textContent = "";
    for (const [stage, label] of [["send", "requested → sent"], ["delivery", "sent → delivered"]]) {
      const s = body.totals[stage];
      const row = document.createElement("tr");
      row.dataset.stage = stage;
      cell(row, label, "name");
      cell(row, fmtInt(s.count));
      cell(row, fmtMs(s.avg_ms));
      cell(row, fmtMs(s.p50_ms));
      cell(row, fmtMs(s.p95_ms));
      cell(row, fmtMs(s.p99_ms));
      tbody.appendChild(row);
    }
    lineChart(testId("chart-latency"), {
      ...span,
      label: "Average latency over time",
      series: [
        { name: "send_avg_ms", label: "send avg", points: asPoints(body.series, "send_avg_ms") },
        { name: "delivery_avg_ms", label: "delivery avg", points: asPoints(body.series, "delivery_avg_ms") },
      ],
      yFormat: msAxis,
    });
  }

  function renderProviders(body) {
    const tbody = testId("providers-table").querySelector("tbody");
    tbody.textContent = "";
    if (!body.providers.length) {
      const row = document.createElement("tr");
      cell(row, "No provider traffic in this range", "empty").colSpan = 7;
      tbody.appendChild(row);
    }
    for (const p of body.providers) {
      const row = document.createElement("tr");
      row.dataset.provider = p.provider;
      cell(row, p.provider, "name");
      cell(row, fmtInt(p.dispatched));
      cell(row, fmtInt(p.delivered));
      cell(row, fmtInt(p.errors));
      const rate = cell(row, fmtPct(p.error_rate));
      if (p.error_rate !== null && p.error_rate >= 0.05) rate.classList.add("bad");
      cell(row, fmtMs(p.delivery_avg_ms));
      const classes = p.top_error_classes.map((c) => `${c.error_class || "(none)"} ×${c.count}`).join(", ");
      cell(row, classes || "—", "classes");
      tbody.appendChild(row);
    }
    if (!controls.provider.value) {
      for (const p of body.providers) state.providers.add(p.provider);
      fillProviders();
    }
  }

  function fillProviders() {
    const chosen = controls.provider.value;
    const names = [...new Set([...state.providers, ...(chosen ? [chosen] : [])])].sort();
    const have = [...controls.provider.options].slice(1).map((o) => o.value);
    if (have.join() === names.join()) return;
    controls.provider.length = 1;
    for (const name of names) controls.provider.add(new Option(name, name));
    controls.provider.value = chosen;
  }

  // ---------------------------------------------------------------- SLA

  const SLA_OK = "ok";

  /** 60 -> "1 h", 5 -> "5 min", 1440 -> "1 d": a burn-rate window. */
  function fmtWindow(minutes) {
    if (minutes % 1440 === 0) return `${minutes / 1440} d`;
    if (minutes % 60 === 0) return `${minutes / 60} h`;
    return `${minutes} min`;
  }

  /** An objective's own numbers, without trailing zeros: 0.995 -> "99.5 %", 30000 ms -> "30 s". */
  const fmtTarget = (t) => `${Number((t * 100).toFixed(3))} %`;
  function fmtThreshold(ms) {
    if (ms % 60e3 === 0) return `${ms / 60e3} min`;
    if (ms % 1e3 === 0) return `${ms / 1e3} s`;
    return `${ms} ms`;
  }

  const fmtBurn = (b) => (b === null || b === undefined ? "–" : b >= 100 ? b.toFixed(0) : b.toFixed(1));

  /** Lowest y of the good-ratio chart: room below the target for a dip, and the lowest value shown. */
  function slaFloor(target, ratios) {
    const allowed = 1 - target;
    return Math.max(0, Math.min(target - 4 * allowed, ...ratios.filter((r) => r !== null)));
  }

  function slaCard(o) {
    // breach (a page rule or no budget left), ticket (a ticket rule fires), or ok
    const overall = o.breach ? "breach" : o.severity === "ticket" ? "ticket" : SLA_OK;
    const card = el("article", `sla-card sla-${overall}`);
    card.dataset.testid = "sla-objective";
    card.dataset.channel = o.channel;
    card.dataset.severity = o.severity;
    card.dataset.breach = String(o.breach);

    const head = el("header", "sla-head", undefined, card);
    const title = `${o.channel.toUpperCase()} · ${fmtTarget(o.target)} delivered within ${fmtThreshold(o.latency_ms)}`;
    el("h3", "", title, head).dataset.testid = "sla-title";
    el("span", `badge sla-state sla-state-${overall}`, overall, head).dataset.testid = "sla-state";

    const figures = el("div", "sla-figures", undefined, card);
    const ratioBox = el("div", "kpi", undefined, figures);
    el("span", "kpi-label", `Good, last ${o.window_days} d`, ratioBox);
    const missed = o.total > 0 && o.ratio < o.target;
    const ratio = el("span", `kpi-value${missed ? " bad" : ""}`, o.total ? fmtPct(o.ratio, 2) : "no sends", ratioBox);
    ratio.dataset.testid = "sla-ratio";
    if (o.total) ratio.dataset.value = String(o.ratio);
    const counts = `target ${fmtTarget(o.target)} · ${fmtInt(o.good)} of ${fmtInt(o.total)} in time`;
    el("span", "kpi-sub", counts, ratioBox).dataset.testid = "sla-counts";

    const budget = el("div", "sla-budget", undefined, figures);
    const left = o.error_budget_remaining;
    el("span", "kpi-label", "Error budget left", budget);
    const level = left === null ? "" : left <= 0 ? "empty" : left < 0.25 ? "low" : left < 0.5 ? "half" : "full";
    const spent = left === null ? null : `${(1 - left).toFixed(1)}× spent`;
    const budgetText = left === null ? "–" : left <= 0 ? `exhausted · ${spent}` : fmtPct(left, 1);
    const value = el("span", `budget-value budget-${level}`, budgetText, budget);
    value.dataset.testid = "sla-budget";
    if (left !== null) value.dataset.value = String(left);
    const bar = el("div", `bar budget-${level}`, undefined, budget);
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-label", "Error budget left");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-valuenow", String(Math.round(Math.max(0, Math.min(1, left ?? 1)) * 100)));
    const fill = el("div", `fill budget-${level}`, undefined, bar);
    fill.style.width = `${Math.max(0, Math.min(1, left ?? 1)) * 100}%`;

    const burns = el("div", "burns", undefined, card);
    const burnLabel = el("span", "kpi-label", "Burn rate per rule (long / short window)", burns);
    burnLabel.title = "A burn of 1 spends the error budget exactly over the objective's window; a rule fires " +
      "(ticket or page) when both its windows burn at least its factor.";
    for (const b of o.burn_rates) {
      const state = b.firing ? b.severity : SLA_OK;
      const windows = `${fmtWindow(b.long_minutes)} / ${fmtWindow(b.short_minutes)}`;
      const badge = el("span", `badge burn burn-${state}`, `${windows} ${state}`, burns);
      badge.dataset.testid = "sla-burn";
      badge.dataset.state = state;
      badge.title = `burn ${fmtBurn(b.long_burn)} over ${fmtWindow(b.long_minutes)}, ${fmtBurn(b.short_burn)} over ` +
        `${fmtWindow(b.short_minutes)}; ${b.severity} when both reach ${b.factor}`;
      el("span", "burn-value", `×${fmtBurn(b.long_burn)} / ×${fmtBurn(b.short_burn)}`, badge);
    }

    const figure = el("figure", "", undefined, card);
    el("figcaption", "", "Good ratio per hour of send, last 24 h (dashed: target)", figure);
    const chart = el("div", "chart", undefined, figure);
    chart.dataset.testid = "sla-chart";
    const hours = o.series.map((p) => Date.parse(p.hour));
    const ratios = o.series.map((p) => p.ratio);
    const from = hours[0];
    const to = hours[hours.length - 1] + 3600e3;
    lineChart(chart, {
      from,
      to,
      label: `Good ratio of ${o.channel} per hour against the target`,
      series: [
        { name: "good_ratio", label: "good ratio", points: hours.map((t, i) => [t, ratios[i]]) },
        {
          name: "target",
          label: `target ${fmtTarget(o.target)}`,
          color: "#dc2626",
          dash: "5 4",
          markers: false,
          points: [[from, o.target], [to, o.target]],
        },
      ],
      yFormat: pctAxis,
      yMax: 1,
      yMin: slaFloor(o.target, ratios),
      empty: "No sends judged in the last 24 h",
    });
    return card;
  }

  function renderSla(body) {
    const list = testId("sla-list");
    list.textContent = "";
    const channel = controls.channel.value;
    const shown = body.objectives.filter((o) => !channel || o.channel.toUpperCase() === channel);
    testId("sla-note").textContent = `policy ${body.policy_version} · as of ${fmtClock(new Date(body.as_of))} UTC`;
    if (!shown.length) {
      const what = body.objectives.length ? `no ${channel} objective` : "no SLA objectives";
      const empty = el("p", "sla-empty", `${body.tenant}: ${what} in the guardrails policy.`, list);
      empty.dataset.testid = "sla-empty";
    }
    for (const o of shown) list.appendChild(slaCard(o));
  }

  // ---------------------------------------------------------------- alerts

  function sinceText(iso) {
    const minutes = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 60e3));
    return minutes < 60 ? `${minutes} min` : fmtMs(minutes * 60e3);
  }

  function alertRow(a) {
    const row = document.createElement("tr");
    row.dataset.testid = "alert-row";
    row.dataset.alertId = a.alert_id;
    row.dataset.status = a.status;
    row.className = `alert-${a.status}`;
    const sev = document.createElement("span");
    sev.className = `badge sev-${a.severity}`;
    sev.textContent = a.severity;
    sev.dataset.testid = "alert-severity";
    cell(row, "").appendChild(sev);
    cell(row, `${a.metric} ${a.kind}`, "name").dataset.testid = "alert-title";
    const series = `${a.channel || "all channels"} / ${a.provider || "all providers"}`;
    cell(row, series).dataset.testid = "alert-series";
    const values = cell(row, "", "values");
    values.dataset.testid = "alert-values";
    for (const [text, className] of [
      [fmtMetric(a.metric, a.observed), "observed"],
      ["vs", "vs"],
      [fmtMetric(a.metric, a.expected), "expected"],
    ]) {
      const span = document.createElement("span");
      span.className = className;
      span.textContent = text;
      values.appendChild(span);
    }
    values.title = `observed ${a.observed} · expected ${a.expected} · score ${a.score}`;
    const first = cell(row, `${fmtStamp(new Date(a.first_seen))} UTC`, "when");
    first.title = a.first_seen;
    const state = document.createElement("span");
    state.className = "state";
    state.dataset.testid = "alert-status";
    state.textContent =
      a.status === "open"
        ? `open for ${sinceText(a.first_seen)}`
        : `resolved at ${fmtStamp(new Date(a.resolved_at))} UTC`;
    cell(row, "", "when").appendChild(state);
    const links = cell(row, "", "links");
    link(links, "Runbook", a.runbook_url, "alert-runbook-link", true);
    link(links, "show on dashboard", a.dashboard_url, "alert-dashboard-link", false);
    return row;
  }

  async function loadAlerts(tenant, params) {
    const base = { from: params.from, to: params.to, channel: params.channel, provider: params.provider };
    const [open, resolved] = await Promise.all(
      Object.entries(ALERT_LIMITS).map(([status, limit]) =>
        api(`/api/v1/tenants/${tenant}/alerts`, { ...base, status, limit }),
      ),
    );
    return { open: open.alerts, resolved: resolved.alerts };
  }

  function renderAlerts(body) {
    const tbody = testId("alerts-table").querySelector("tbody");
    tbody.textContent = "";
    const alerts = [...body.open, ...body.resolved]; // open first; each list newest first
    if (!alerts.length) {
      const row = document.createElement("tr");
      const empty = cell(row, "No alerts in this range", "empty");
      empty.colSpan = 7;
      empty.dataset.testid = "alerts-empty";
      tbody.appendChild(row);
    }
    for (const a of alerts) tbody.appendChild(alertRow(a));
    const count = testId("alerts-open-count");
    count.textContent = `${body.open.length} open`;
    count.hidden = body.open.length === 0;
    const note = testId("alerts-note");
    const capped = Object.entries(ALERT_LIMITS).filter(([status, limit]) => body[status].length >= limit);
    note.textContent = capped.map(([status, limit]) => `Showing the latest ${limit} ${status} alerts.`)
      .join(" ");
    note.hidden = capped.length === 0;
  }

  // ---------------------------------------------------------------- dispatch: failover and budgets

  const NO_DISPATCH = "No dispatch traffic in this range";

  function renderFailover(body, span) {
    const t = body.totals;
    setValue("failover-first-attempts", fmtInt(t.first_attempts), t.first_attempts);
    setValue("failover-share", fmtPct(t.failover_share), t.failover_share);
    setValue("failover-retries", fmtInt(t.retry_failover), t.retry_failover);
    setValue("failover-switches", fmtInt(body.switches.length), body.switches.length);
    // One line per provider that took first attempts, zero in the buckets it took none.
    const step = BUCKET_MS[span.bucket];
    const buckets = [];
    for (let b = Math.floor(span.from / step) * step; b < span.to; b += step) buckets.push(b);
    const at = new Map(body.series.map((p) => [`${Date.parse(p.bucket)}|${p.provider}`, p.first_attempts]));
    const series = body.providers
      .filter((p) => p.first_attempts > 0)
      .map((p) => ({
        name: p.provider,
        zeroDots: false,
        points: buckets.map((b) => [b, at.get(`${b}|${p.provider}`) || 0]),
      }));
    const bands = body.switches.map((s) => ({
      start: Date.parse(s.first_seen),
      end: s.resolved_at === null ? null : Date.parse(s.resolved_at),
      open: s.status === "open",
      label: `${s.channel} ${s.provider} switched out ${fmtStamp(new Date(s.first_seen))} UTC: ${s.detail || ""}`,
    }));
    lineChart(testId("chart-failover"), {
      ...span,
      label: "First attempts per provider over time, with provider switches",
      series,
      bands,
      yFormat: intAxis,
      empty: NO_DISPATCH,
    });

    const tbody = testId("failover-table").querySelector("tbody");
    tbody.textContent = "";
    if (!body.providers.length) emptyRow(tbody, NO_DISPATCH, 7, "failover-empty");
    for (const p of body.providers) {
      const row = document.createElement("tr");
      row.dataset.provider = p.provider;
      cell(row, p.provider, "name");
      cell(row, fmtInt(p.primary));
      const failover = cell(row, fmtInt(p.failover));
      if (p.failover > 0) failover.classList.add("warn");
      cell(row, fmtInt(p.probe));
      cell(row, fmtInt(p.retry_failover));
      const failed = cell(row, fmtInt(p.failed_total));
      if (p.failed_total > 0) failed.classList.add("bad");
      const classes = Object.entries(p.failed).sort((a, b) => b[1] - a[1]);
      cell(row, classes.map(([c, n]) => `${c || "(none)"} ×${n}`).join(", ") || "—", "classes");
      tbody.appendChild(row);
    }

    const switches = testId("switches-table").querySelector("tbody");
    switches.textContent = "";
    if (!body.switches.length) emptyRow(switches, "No provider switches in this range", 6, "switches-empty");
    for (const s of [...body.switches].reverse()) { // newest first, as the alerts panel
      const row = document.createElement("tr");
      row.dataset.testid = "switch-row";
      row.dataset.alertId = s.alert_id;
      row.dataset.status = s.status;
      row.className = `alert-${s.status}`;
      const badge = el("span", `badge ${s.status === "open" ? "sev-critical" : ""}`, s.status === "open" ? "out" : "back");
      cell(row, "").appendChild(badge);
      cell(row, `${s.channel} / ${s.provider}`, "name");
      cell(row, `${fmtStamp(new Date(s.first_seen))} UTC`, "when");
      const end = s.resolved_at === null ? Date.now() : Date.parse(s.resolved_at);
      cell(row, s.resolved_at === null ? "still out" : `${fmtStamp(new Date(s.resolved_at))} UTC`, "when");
      cell(row, fmtMs(end - Date.parse(s.first_seen)), "when");
      cell(row, [s.detail, s.resolved_detail].filter(Boolean).join(" · ") || "—", "classes");
      switches.appendChild(row);
    }
  }

  const DIMENSIONS = {
    messages_per_day: "Messages today",
    messages_total: "Messages in total",
    money_per_day: "Money today",
    money_total: "Money in total",
  };

  /** Micros of a currency as money: 56190 -> "0.0562 USD", 150000000 -> "150.00 USD". */
  function fmtMoney(micros, currency) {
    const units = micros / 1e6;
    const digits = units !== 0 && Math.abs(units) < 1 ? 4 : 2;
    return `${units.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })} ${currency}`;
  }

  const useLevel = (fraction) => (fraction >= 1 ? "over" : fraction >= 0.8 ? "warn" : "ok");

  function budgetDimension(d, currency) {
    const level = useLevel(d.fraction);
    const box = el("div", `budget-dim use-${level}`);
    box.dataset.testid = "budget-dimension";
    box.dataset.dimension = d.dimension;
    box.dataset.fraction = String(d.fraction);
    box.dataset.paused = String(d.paused);
    const head = el("div", "budget-dim-head", undefined, box);
    el("span", "kpi-label", DIMENSIONS[d.dimension] || d.dimension, head);
    const amount = (v) => (d.unit === "micros" ? fmtMoney(v, currency) : fmtInt(v));
    const text = `${amount(d.used)} / ${amount(d.limit)} · ${fmtPct(d.fraction, d.fraction < 0.001 && d.fraction > 0 ? 3 : 1)}`;
    el("span", "budget-use", text, head).dataset.testid = "budget-use";
    const bar = el("div", "bar", undefined, box);
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-label", `${DIMENSIONS[d.dimension] || d.dimension} used`);
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-valuenow", String(Math.round(Math.min(1, d.fraction) * 100)));
    el("div", `fill use-${level}`, undefined, bar).style.width = `${Math.min(1, d.fraction) * 100}%`;
    if (d.suppressed > 0) {
      const when = d.period === "day" ? "today" : "so far";
      el("span", "budget-suppressed", `${fmtInt(d.suppressed)} suppressed ${when}`, box);
    }
    return box;
  }

  function budgetScope(s) {
    const row = el("article", `budget-scope${s.paused ? " budget-paused" : ""}`);
    row.dataset.testid = "budget-scope";
    row.dataset.scope = s.key;
    row.dataset.paused = String(s.paused);
    const head = el("header", "budget-scope-head", undefined, row);
    el("h3", "", `${s.scope === "tenant" ? "Tenant" : "Campaign"} ${s.id}`, head).dataset.testid = "budget-title";
    el("span", "kpi-sub", s.policy_path, head);
    const state = el("span", `badge ${s.paused ? "sev-critical" : "budget-active"}`, s.paused ? "paused" : "active", head);
    state.dataset.testid = "budget-state";
    const dims = el("div", "budget-dims", undefined, row);
    if (!s.dimensions.length) el("span", "kpi-sub", "no limits", dims);
    for (const d of s.dimensions) dims.appendChild(budgetDimension(d, s.currency));
    return row;
  }

  function renderBudgets(body) {
    testId("budgets-note").textContent =
      `UTC day ${body.day} · every channel · policy ${body.policy_version}`;
    const list = testId("budget-list");
    list.textContent = "";
    if (!body.scopes.length) {
      el("p", "sla-empty", "No budgets for this tenant", list).dataset.testid = "budgets-empty";
    }
    for (const s of body.scopes) list.appendChild(budgetScope(s));
    const tbody = testId("budget-alerts-table").querySelector("tbody");
    tbody.textContent = "";
    if (!body.alerts.length) emptyRow(tbody, "No budget alerts in the last 30 days", 6, "budget-alerts-empty");
    for (const a of body.alerts) {
      const row = document.createElement("tr");
      row.dataset.testid = "budget-alert-row";
      row.dataset.alertId = a.alert_id;
      row.className = a.kind === "exhausted" ? "alert-open" : "";
      const sev = el("span", `badge sev-${a.severity}`, a.severity);
      cell(row, "").appendChild(sev);
      cell(row, `${DIMENSIONS[a.dimension] || a.dimension} ${a.kind}`, "name");
      cell(row, a.scope || "—");
      cell(row, `${fmtStamp(new Date(a.first_seen))} UTC`, "when");
      cell(row, a.detail || "—", "classes");
      link(cell(row, "", "links"), "Runbook", a.runbook_url, "budget-alert-runbook-link", true);
      tbody.appendChild(row);
    }
  }

  // ---------------------------------------------------------------- experiments

  function renderExperiments(body) {
    testId("experiments-note").textContent = `definitions version ${body.version}`;
    const tbody = testId("experiments-table").querySelector("tbody");
    tbody.textContent = "";
    if (!body.experiments.length) emptyRow(tbody, "No experiments for this tenant", 6, "experiments-empty");
    for (const x of body.experiments) {
      const row = document.createElement("tr");
      row.dataset.testid = "experiment-row";
      row.dataset.experiment = x.experiment_id;
      row.dataset.state = x.state;
      link(cell(row, "", "name"), x.experiment_id, x.dashboard_url, "experiment-link", false);
      cell(row, "").appendChild(el("span", `badge state-${x.state}`, x.state));
      cell(row, x.template);
      cell(row, x.primary_metric);
      cell(row, fmtSpan(x.start, x.stop), "when");
      cell(row, x.source === "file" ? "policies file" : `API, version ${x.version}`);
      tbody.appendChild(row);
    }
  }

  const LOAD = {
    alerts: loadAlerts,
    sla: (tenant) => api(`/api/v1/tenants/${tenant}/sla`),
    budgets: (tenant) => api(`/api/v1/tenants/${tenant}/budgets`), // every channel, today and in total
  };

  const RENDER = {
    alerts: renderAlerts,
    delivery: renderDelivery,
    engagement: renderEngagement,
    latency: renderLatency,
    providers: renderProviders,
    failover: renderFailover,
    sla: renderSla,
    budgets: renderBudgets,
    experiments: renderExperiments,
  };

  // ---------------------------------------------------------------- loading

  function currentWindow() {
    const range = RANGES[controls.range.value] || RANGES["1h"];
    const to = Math.floor(Date.now() / 60e3) * 60e3 + 60e3; // through the current minute
    const from = to - range.ms;
    return { from, to, bucket: range.bucket };
  }

  const iso = (ms) => new Date(ms).toISOString().replace(".000Z", "Z");

  async function refresh() {
    if (!state.key || !state.tenant) return;
    const generation = ++state.generation;
    const startedAt = Date.now();
    const span = currentWindow();
    const params = {
      from: iso(span.from),
      to: iso(span.to),
      bucket: span.bucket,
      channel: controls.channel.value,
      provider: controls.provider.value,
    };
    const tenant = encodeURIComponent(state.tenant);
    status("Loading…");
    state.loading = true;
    let results;
    try {
      results = await Promise.allSettled(
        PANELS.map((p) =>
          LOAD[p] ? LOAD[p](tenant, params) : api(`/api/v1/tenants/${tenant}/${p}`, params),
        ),
      );
    } finally {
      if (generation === state.generation) state.loading = false;
    }
    if (generation !== state.generation) return; // a newer request (filter change) owns the page
    const errors = [];
    results.forEach((result, i) => {
      const name = PANELS[i];
      if (result.status === "fulfilled") {
        panelOk(name);
        RENDER[name](result.value, span);
      } else {
        errors.push(result.reason.message);
        panelFailed(name, result.reason.message);
      }
    });
    showBanner(errors);
    const note = `${state.tenant} · ${fmtStamp(new Date(span.from))} – ${fmtStamp(new Date(span.to))} UTC, per ${span.bucket}`;
    byId("range-note").textContent = note;
    const now = new Date();
    const at = `${fmtClock(now)}:${pad(now.getUTCSeconds())} UTC`;
    const every = `every ${state.config.refresh_s} s`;
    status(errors.length ? `Not loaded at ${at} · retrying ${every}` : `Updated ${at} · refreshes ${every}`);
    document.body.dataset.generation = String(generation);
    document.body.dataset.startedAt = String(startedAt); // what the shown numbers are as of
    document.body.dataset.channel = params.channel || "all";
    document.body.dataset.state = errors.length ? "error" : "ok";
  }

  function schedule() {
    clearInterval(state.timer);
    state.timer = setInterval(() => {
      // A slow answer is not abandoned by the next tick: only a filter change supersedes a refresh.
      if (!document.hidden && !state.loading) refresh();
    }, state.config.refresh_s * 1000);
  }

  function syncUrl() {
    const url = new URL(window.location.href);
    const values = {
      tenant: state.tenant,
      channel: controls.channel.value,
      provider: controls.provider.value,
      range: controls.range.value,
    };
    for (const [k, v] of Object.entries(values)) {
      if (v) url.searchParams.set(k, v);
      else url.searchParams.delete(k);
    }
    window.history.replaceState(null, "", url);
  }

  function resetPanels(message, info = false) {
    for (const name of PANELS) panelFailed(name, message, info);
  }

  async function connect() {
    const key = controls.key.value.trim();
    if (!key) {
      showBanner(["Paste an API key first."]);
      return;
    }
    state.key = key;
    saveKey(key);
    byId("sign-out").disabled = false;
    status("Checking key…");
    let tenants;
    try {
      tenants = (await api("/api/v1/tenants")).tenants;
    } catch (err) {
      if (state.key !== key) return; // signed out (or another key) while the answer was on its way
      controls.tenant.disabled = true;
      controls.tenant.length = 0;
      controls.tenant.add(new Option("—", ""));
      state.tenant = "";
      showBanner([err.message]);
      resetPanels(err.message);
      status("Not connected.");
      document.body.dataset.state = "error";
      return;
    }
    if (state.key !== key) return;
    state.tenants = tenants;
    const wanted = new URLSearchParams(window.location.search).get("tenant") || state.tenant;
    controls.tenant.length = 0;
    for (const t of tenants) controls.tenant.add(new Option(t, t));
    if (wanted && !tenants.includes(wanted)) {
      // Still asked for: the API, not the page, decides access, and says why it refuses.
      const option = new Option(`${wanted} (not visible to this key)`, wanted);
      option.dataset.foreign = "true";
      controls.tenant.add(option);
    }
    controls.tenant.disabled = false;
    if (!tenants.length && !wanted) {
      state.tenant = "";
      controls.tenant.add(new Option("no tenants with data yet", ""));
      resetPanels("No tenant has data yet.", true);
      status("Connected; no data.");
      return;
    }
    state.tenant = wanted || tenants[0];
    controls.tenant.value = state.tenant;
    syncUrl();
    await refresh();
    if (state.key === key) schedule(); // not after a sign-out during that first refresh
  }

  /** Back to the page as loaded without a key: the key gone from storage and memory, no timer, no
   * request in flight that could still draw, no tenant's numbers or names left on screen. */
  function signOut() {
    clearKey();
    state.key = "";
    state.tenant = "";
    state.tenants = [];
    state.generation += 1; // a refresh still waiting for its answers draws nothing (see refresh)
    state.loading = false;
    clearInterval(state.timer);
    state.timer = null;
    controls.key.value = "";
    controls.tenant.length = 0;
    controls.tenant.add(new Option("—", ""));
    controls.tenant.disabled = true;
    state.providers.clear();
    controls.provider.value = "";
    fillProviders();
    resetPanels("Paste an API key to see data.", true);
    testId("alerts-note").hidden = true;
    byId("range-note").textContent = "";
    showBanner([]);
    status("Paste an API key to start.");
    byId("sign-out").disabled = true;
    document.body.dataset.state = "signed-out";
  }

  async function loadConfig() {
    try {
      const response = await fetch("/dashboard/config.json", { cache: "no-store" });
      if (response.ok) state.config = await response.json();
    } catch (_) {
      /* keep the defaults: links stay hidden, refresh stays 10 s */
    }
    for (const link of document.querySelectorAll("a.runbook")) {
      const entry = state.config.runbooks[link.dataset.panel];
      if (entry) {
        link.href = entry.url;
        link.title = entry.key.startsWith("index.") ? "Runbooks: every alert kind" : `Runbook for ${entry.key}`;
      } else {
        link.hidden = true;
      }
    }
  }

  function init() {
    const params = new URLSearchParams(window.location.search);
    if (params.get("range") in RANGES) controls.range.value = params.get("range");
    if (["EMAIL", "SMS", "PUSH"].includes(params.get("channel"))) controls.channel.value = params.get("channel");
    if (params.get("provider")) {
      state.providers.add(params.get("provider"));
      fillProviders();
      controls.provider.value = params.get("provider");
    }
    byId("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      connect();
    });
    byId("sign-out").addEventListener("click", signOut);
    controls.tenant.addEventListener("change", () => {
      state.tenant = controls.tenant.value;
      state.providers.clear();
      controls.provider.value = "";
      fillProviders();
      syncUrl();
      refresh();
    });
    for (const c of [controls.channel, controls.provider, controls.range]) {
      c.addEventListener("change", () => {
        syncUrl();
        refresh();
      });
    }
    resetPanels("Paste an API key to see data.", true);
    loadConfig().then(() => {
      const saved = loadKey();
      if (saved) {
        controls.key.value = saved;
        connect();
      }
    });
  }

  init();
})();
