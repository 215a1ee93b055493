// Dockyard's monitoring dashboard: fetches /api/monitoring/overview and draws it, charts as
// inline SVG. No third-party code and no inline script or style (the page's policy forbids
// them); every text from the server goes into the page as text, never as markup.
"use strict";

(function () {
  const KEY_STORAGE = "dockyard.dashboard.key";
  const REFRESH_MS = 30000;
  const SVG = "http://www.w3.org/2000/svg";
  const CHART = { width: 560, height: 190, left: 52, right: 12, top: 12, bottom: 26 };
  const SPARK = { width: 220, height: 36, left: 2, right: 2, top: 3, bottom: 3 };
  let timer = null;

  // --- DOM helpers ------------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attributes) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      node.setAttribute(name, String(value));
    }
    return node;
  }

  function number(value, digits) {
    if (value === null || value === undefined) return "–";
    if (Math.abs(value) >= 1000) return Math.round(value).toLocaleString("en");
    return Number(value.toPrecision(digits || 3)).toString();
  }

  function clock(seconds, spanSeconds) {
    const date = new Date(seconds * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    const time = `${pad(date.getHours())}:${pad(date.getMinutes())}`;
    if (spanSeconds <= 86400) return time;
    return `${pad(date.getDate())}/${pad(date.getMonth() + 1)} ${time}`;
  }

  function ago(iso) {
    const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (seconds < 90) return `${Math.round(seconds)} s ago`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 129600) return `${Math.round(seconds / 3600)} h ago`;
    return `${Math.round(seconds / 86400)} days ago`;
  }

  // --- Charts -----------------------------------------------------------------------------

  function niceTicks(low, high, count) {
    const span = high - low || Math.abs(high) || 1;
    const raw = span / count;
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((f) => f * magnitude).find((s) => span / s <= count);
    const ticks = [];
    for (let v = Math.floor(low / step) * step; v <= high + step * 1e-9; v += step) {
      ticks.push(Number(v.toPrecision(12)));
    }
    return ticks;
  }

  // Points of a series as path commands; a null value, or a gap longer than maxGap seconds,
  // starts a new line. Returns the path, how many points it joins, and the points that join
  // none (drawn as dots: a line of one point is invisible).
  function pathOf(series, x, y, maxGap) {
    let d = "";
    let points = 0;
    let previous = null;
    let run = [];
    const alone = [];
    const endRun = () => {
      if (run.length === 1) alone.push(run[0]);
      run = [];
    };
    series.t.forEach((t, i) => {
      const v = series.v[i];
      if (v === null || v === undefined) {
        previous = null;
        endRun();
        return;
      }
      const joined = previous !== null && (!maxGap || t - previous <= maxGap);
      if (!joined) endRun();
      const point = [x(t), y(v)];
      d += `${joined ? "L" : "M"}${point[0].toFixed(1)},${point[1].toFixed(1)}`;
      run.push(point);
      previous = t;
      points += 1;
    });
    endRun();
    return { d, points, alone };
  }

  // A line chart over [start, end] (seconds): series [{name, t, v, className, dashed, marks}]
  // (marks: a flag per point, drawn as a red dot), options {label, threshold (a dashed line),
  // zero (the axis starts at 0), maxGap (seconds), size, axes (false: a sparkline)}.
  // Returns the <svg>.
  function lineChart(start, end, series, options) {
    const size = options.size || CHART;
    const width = size.width - size.left - size.right;
    const height = size.height - size.top - size.bottom;
    const values = series.flatMap((s) => s.v.filter((v) => v !== null && v !== undefined));
    if (options.threshold !== undefined && options.threshold !== null) {
      values.push(options.threshold);
    }
    // reduce, not Math.min(...values): a long series would overflow the call's arguments.
    let low = options.zero ? 0 : values.reduce((a, b) => Math.min(a, b), Infinity);
    let high = values.reduce((a, b) => Math.max(a, b), -Infinity);
    if (!values.length) {
      low = 0;
      high = 1;
    }
    if (high === low) {
      high = low + (Math.abs(low) || 1) * 0.1;
      low = options.zero ? low : low - (high - low);
    }
    const ticks = options.axes === false ? [] : niceTicks(low, high, 4);
    if (ticks.length) {
      low = Math.min(low, ticks[0]);
      high = Math.max(high, ticks[ticks.length - 1]);
    }
    const x = (t) => size.left + ((t - start) / (end - start || 1)) * width;
    const y = (v) => size.top + height - ((v - low) / (high - low)) * height;
    const chart = svg("svg", {
      viewBox: `0 0 ${size.width} ${size.height}`,
      class: "chart",
      role: "img",
    });
    if (options.label) chart.setAttribute("aria-label", options.label);
    for (const tick of ticks) {
      chart.appendChild(
        svg("line", { x1: size.left, x2: size.left + width, y1: y(tick), y2: y(tick), class: "gridline" })
      );
      const label = svg("text", { x: size.left - 6, y: y(tick) + 4, class: "tick y" });
      label.textContent = number(tick);
      chart.appendChild(label);
    }
    if (options.axes !== false) {
      for (const fraction of [0, 0.5, 1]) {
        const t = start + (end - start) * fraction;
        const anchor = fraction === 0 ? "start" : fraction === 1 ? "end" : "middle";
        const label = svg("text", {
          x: x(t), y: size.height - 6, class: "tick x", "text-anchor": anchor,
        });
        label.textContent = clock(t, end - start);
        chart.appendChild(label);
      }
    }
    if (options.threshold !== undefined && options.threshold !== null) {
      const at = y(options.threshold);
      chart.appendChild(
        svg("line", { x1: size.left, x2: size.left + width, y1: at, y2: at, class: "threshold" })
      );
    }
    series.forEach((s, index) => {
      const { d, points, alone } = pathOf(s, x, y, options.maxGap);
      const className = `line ${s.className || `s${index % 6}`}${s.dashed ? " dashed" : ""}`;
      const path = svg("path", { d, class: className, "data-series": s.name, "data-points": points });
      chart.appendChild(path);
      for (const [cx, cy] of alone) {
        chart.appendChild(svg("circle", { cx, cy, r: 2, class: className }));
      }
      (s.marks || []).forEach((marked, i) => {
        if (marked && s.v[i] !== null) {
          chart.appendChild(svg("circle", { cx: x(s.t[i]), cy: y(s.v[i]), r: 2.2, class: "mark" }));
        }
      });
    });
    return chart;
  }

  function legend(series) {
    const list = el("div", "legend");
    series.forEach((s, index) => {
      const item = el("span", "item");
      item.appendChild(el("span", `swatch ${s.className || `s${index % 6}`}${s.dashed ? " dashed" : ""}`));
      item.appendChild(document.createTextNode(s.name));
      list.appendChild(item);
    });
    return list;
  }

  function card(title, body, note) {
    const box = el("figure", "card");
    box.appendChild(el("figcaption", null, title));
    if (body) box.appendChild(body);
    if (note) box.appendChild(el("p", "note", note));
    return box;
  }

  function chartCard(title, chart, series, name) {
    const box = card(title, chart);
    box.dataset.chart = name;
    if (series.length > 1) box.appendChild(legend(series));
    return box;
  }

  // --- Sections ---------------------------------------------------------------------------

  function alertList(alerts) {
    const list = document.getElementById("alerts");
    list.replaceChildren();
    document.getElementById("alert-count").textContent = alerts.length ? `(${alerts.length})` : "";
    if (!alerts.length) {
      list.appendChild(el("li", "none", "No open alerts."));
      return;
    }
    for (const alert of alerts) {
      const item = el("li", "alert");
      item.appendChild(el("strong", null, alert.rule));
      if (alert.model) item.appendChild(el("span", "model", alert.model));
      item.appendChild(el("span", "message", alert.message));
      const when = `fired ${ago(alert.fired_at)}, last seen ${ago(alert.last_seen_at)}`;
      item.appendChild(el("span", "when", when));
      list.appendChild(item);
    }
  }

  function drifted(model) {
    return model.drift.filter((f) => f.latest.drifted).length;
  }

  function modelTable(data) {
    const body = document.querySelector("#models tbody");
    body.replaceChildren();
    if (!data.models.length) {
      const row = el("tr");
      const cell = el("td", "none", "No models registered (or none this key may see).");
      cell.colSpan = 8;
      row.appendChild(cell);
      body.appendChild(row);
    }
    for (const model of data.models) {
      const row = el("tr");
      const name = el("td", "name");
      const link = el("a", null, model.name);
      link.href = `#model-${encodeURIComponent(model.name)}`;
      name.appendChild(link);
      row.appendChild(name);
      const versions = el("td", "versions");
      for (const version of model.versions) {
        const tag = el("span", `version${version.archived ? " archived" : ""}`, `v${version.version}`);
        tag.title = `${version.framework}, registered ${version.created_at || "?"}`;
        for (const alias of version.aliases) tag.appendChild(el("span", "alias", alias));
        versions.appendChild(tag);
      }
      row.appendChild(versions);
      const traffic = model.traffic || {};
      for (const value of [answered(model.traffic), traffic.p50_ms, traffic.p99_ms]) {
        row.appendChild(el("td", "num", number(value)));
      }
      const failed = model.answered ? model.answered.failed : null;
      const errors = el("td", `num${failed ? " bad" : ""}`, model.answered ? `${failed} / ${model.answered.requests}` : "–");
      errors.title = "failed / all requests since the server started";
      row.appendChild(errors);
      const drift = model.drift.length ? `${drifted(model)} / ${model.drift.length}` : "–";
      row.appendChild(el("td", `num${drifted(model) ? " bad" : ""}`, drift));
      const alerts = data.alerts.filter((a) => a.model === model.name).length;
      row.appendChild(el("td", `num${alerts ? " bad" : ""}`, alerts));
      body.appendChild(row);
    }
  }

  // Requests answered: the logged ones, scaled up when the log keeps a sample.
  function answered(traffic) {
    return traffic ? traffic.requests / (traffic.sample || 1) : null;
  }

  // Traffic buckets are sent only where there was traffic; the chart shows the others as 0.
  function denseRate(data, traffic) {
    const step = data.bucket_s;
    const series = traffic.series;
    const counts = new Map(series.t.map((t, i) => [t, series.requests[i]]));
    const t = [];
    const v = [];
    for (let at = Math.floor(data.start / step) * step; at <= data.end; at += step) {
      t.push(at);
      v.push(((counts.get(at) || 0) * 60) / step / (traffic.sample || 1));
    }
    return { t, v };
  }

  function trafficNote(data, traffic) {
    const notes = [];
    if (!traffic.requests) notes.push("No requests logged in this window.");
    if (traffic.sample < 1) notes.push(`Estimated from the ${percent(traffic.sample)} of requests the log keeps.`);
    if (!traffic.complete) notes.push(`Busy: only the newest log rows were read, from ${clock(traffic.from, data.end - data.start)}.`);
    return notes.join(" ") || null;
  }

  function trafficCards(data, model) {
    if (!data.prediction_log) {
      return [card("Traffic and latency", null, "The prediction log is off (setting prediction_log): no traffic to show.")];
    }
    const traffic = model.traffic;
    const series = traffic.series;
    const rate = [{ name: "requests per minute", ...denseRate(data, traffic) }];
    const latency = [
      { name: "p50", t: series.t, v: series.p50_ms },
      { name: "p99", t: series.t, v: series.p99_ms },
    ];
    const rateChart = lineChart(data.start, data.end, rate, { zero: true, label: `${model.name} traffic` });
    const latencyChart = lineChart(data.start, data.end, latency, {
      zero: true, maxGap: data.bucket_s, label: `${model.name} latency`,
    });
    const rateCard = chartCard("Traffic (requests per minute)", rateChart, rate, "traffic");
    const note = trafficNote(data, traffic);
    if (note) rateCard.appendChild(el("p", "note", note));
    return [rateCard, chartCard("Latency (ms)", latencyChart, latency, "latency")];
  }

  // Bars of counts: [label, count, className] each.
  function bars(entries) {
    const rowHeight = 18;
    const width = 360;
    const most = Math.max(1, ...entries.map(([, count]) => count));
    const chart = svg("svg", { viewBox: `0 0 ${width} ${entries.length * rowHeight + 4}`, class: "chart bars" });
    entries.forEach(([label, count, className], i) => {
      const y = i * rowHeight + 2;
      const name = svg("text", { x: 0, y: y + 12, class: "tick" });
      name.textContent = label;
      chart.appendChild(name);
      const length = Math.max(1, (count / most) * (width - 190));
      chart.appendChild(svg("rect", { x: 130, y: y + 2, width: length, height: rowHeight - 6, class: `bar ${className}` }));
      const value = svg("text", { x: 136 + length, y: y + 12, class: "tick" });
      value.textContent = count.toLocaleString("en");
      chart.appendChild(value);
    });
    return chart;
  }

  function errorCard(data, model) {
    if (!data.metrics) {
      return card("Answers and errors", null, "Metrics are off (setting metrics): no error counts to show.");
    }
    const answered = model.answered;
    if (!answered.requests) {
      return card("Answers and errors", null, "No requests since the server started.");
    }
    const entries = Object.entries(answered.statuses).map(([status, count]) => [
      `HTTP ${status}`, count, Number(status) >= 400 ? "failed" : "ok",
    ]);
    for (const [kind, count] of Object.entries(answered.errors)) entries.push([kind, count, "failed"]);
    const box = card("Answers and errors since the server started", bars(entries));
    box.dataset.chart = "errors";
    return box;
  }

  function accuracyCards(data, model) {
    const metrics = [...new Set(model.evaluations.map((e) => e.metric))];
    if (!metrics.length) {
      return [card("Accuracy over time", null, "No evaluations in this window: post labels for logged predictions (POST /v2/models/{name}/feedback).")];
    }
    return metrics.map((metric) => {
      const entries = model.evaluations.filter((e) => e.metric === metric);
      const series = [];
      entries.forEach((entry, index) => {
        const className = `s${index % 6}`;
        series.push({ name: `v${entry.version} live`, t: entry.t, v: entry.value, className });
        if (entry.registered !== null) {
          series.push({
            name: `v${entry.version} at registration`, t: [data.start, data.end],
            v: [entry.registered, entry.registered], className, dashed: true,
          });
        }
      });
      const chart = lineChart(data.start, data.end, series, { label: `${model.name} ${metric}` });
      return chartCard(`${metric} over time`, chart, series, `evaluation-${metric}`);
    });
  }

  function percent(share) {
    return `${Number((share * 100).toPrecision(2))}%`;
  }

  // The data-quality part of a drift report: missing values, values out of the reference's
  // range, categories the reference never had.
  function quality(details) {
    const parts = [];
    if (typeof details.missing === "number") parts.push(`missing ${percent(details.missing)}`);
    if (typeof details.out_of_range === "number" && details.out_of_range > 0) {
      parts.push(`out of range ${percent(details.out_of_range)}`);
    }
    if (typeof details.unseen === "number" && details.unseen > 0) {
      const examples = (details.unseen_examples || []).slice(0, 3).join(", ");
      parts.push(`unseen ${percent(details.unseen)}${examples ? ` (${examples})` : ""}`);
    }
    return parts.join(", ");
  }

  function driftCard(data, model) {
    if (!model.drift.length) {
      return card("Drift per feature", null, "No drift reports in this window.");
    }
    const table = el("table", "drift");
    const head = el("tr");
    for (const title of ["Feature", "Method", "PSI", "p-value", "", "Over time", "Data quality"]) {
      head.appendChild(el("th", null, title));
    }
    table.appendChild(el("thead")).appendChild(head);
    const body = table.appendChild(el("tbody"));
    for (const feature of model.drift) {
      const row = el("tr", feature.latest.drifted ? "drifted" : "");
      row.appendChild(el("td", "name", feature.feature));
      row.appendChild(el("td", null, feature.method));
      row.appendChild(el("td", "num", number(feature.latest.score)));
      row.appendChild(el("td", "num", number(feature.latest.p_value)));
      row.appendChild(el("td", "flag", feature.latest.drifted ? "drifted" : "ok"));
      const spark = el("td", "spark");
      // A method "psi+ks" or "psi+chi2": the score is the PSI, the p-value the test's.
      const threshold = feature.method.startsWith("psi") ? data.thresholds.psi : null;
      spark.appendChild(lineChart(data.start, data.end, [
        { name: feature.feature, t: feature.t, v: feature.score, marks: feature.drifted, className: "s0" },
      ], { size: SPARK, axes: false, zero: true, threshold, label: `${feature.feature} drift score` }));
      row.appendChild(spark);
      row.appendChild(el("td", "quality", quality(feature.latest.details || {})));
      body.appendChild(row);
    }
    const note = `Red dots: drifted. Dashed line: the PSI threshold, ${data.thresholds.psi}; ` +
      `a test's p-value below ${data.thresholds.p_value} also counts as drift.`;
    const box = card("Drift per feature", table, note);
    box.dataset.chart = "drift";
    return box;
  }

  function panels(data) {
    const root = document.getElementById("panels");
    root.replaceChildren();
    for (const model of data.models) {
      const panel = el("section", "panel");
      panel.id = `model-${encodeURIComponent(model.name)}`;
      panel.dataset.model = model.name;
      const title = el("h2", null, model.name);
      const aliases = Object.entries(model.aliases).map(([alias, version]) => `${alias} → v${version}`);
      if (aliases.length) title.appendChild(el("span", "aliases", aliases.join(" · ")));
      panel.appendChild(title);
      const grid = el("div", "grid");
      const boxes = [...trafficCards(data, model), errorCard(data, model), ...accuracyCards(data, model)];
      for (const box of boxes) {
        grid.appendChild(box);
      }
      panel.appendChild(grid);
      panel.appendChild(driftCard(data, model));
      root.appendChild(panel);
    }
  }

  // --- Data and the key -------------------------------------------------------------------

  function status(text, isError) {
    const node = document.getElementById("status");
    node.textContent = text;
    node.classList.toggle("error", Boolean(isError));
  }

  function askForKey(message) {
    clearTimeout(timer);
    document.getElementById("content").hidden = true;
    document.getElementById("key-form").hidden = false;
    document.getElementById("key-error").textContent = message || "";
    document.getElementById("key").focus();
    status("");
  }

  async function load() {
    clearTimeout(timer);
    const since = document.getElementById("window").value;
    const key = sessionStorage.getItem(KEY_STORAGE);
    const headers = key ? { Authorization: `Bearer ${key}` } : {};
    document.getElementById("forget").hidden = !key;
    status("Loading…");
    let response;
    try {
      response = await fetch(`/api/monitoring/overview?since=${encodeURIComponent(since)}`, {
        headers, cache: "no-store", credentials: "omit",
      });
    } catch (error) {
      status(`Cannot reach the server: ${error.message}`, true);
      timer = setTimeout(load, REFRESH_MS);
      return;
    }
    const body = await response.json().catch(() => ({}));
    if (response.status === 401 || response.status === 403) {
      if (key) sessionStorage.removeItem(KEY_STORAGE);
      askForKey(key ? body.error || `refused (${response.status})` : "");
      return;
    }
    if (!response.ok) {
      status(body.error || `The server answered ${response.status}`, true);
      timer = setTimeout(load, REFRESH_MS);
      return;
    }
    document.getElementById("key-form").hidden = true;
    document.getElementById("content").hidden = false;
    alertList(body.alerts);
    modelTable(body);
    panels(body);
    status(`Updated ${clock(body.end, 0)} · ${body.models.length} model(s) · refreshes every ${REFRESH_MS / 1000} s`);
    document.body.dataset.loaded = "true";
    timer = setTimeout(load, REFRESH_MS);
  }

  function start() {
    const choice = document.getElementById("window");
    const wanted = new URLSearchParams(location.search).get("since");
    if (wanted && [...choice.options].some((o) => o.value === wanted)) choice.value = wanted;
    choice.addEventListener("change", load);
    document.getElementById("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = document.getElementById("key");
      sessionStorage.setItem(KEY_STORAGE, input.value.trim());
      input.value = "";
      load();
    });
    document.getElementById("forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_STORAGE);
      askForKey("");
      document.getElementById("forget").hidden = true;
    });
    load();
  }

  start();
})();
