// A run: info, params, tags, dataset inputs; one chart per metric key drawn from the bucketed
// history (min, max, last per bucket), refetched finer on zoom; live updates from the run's tail
// stream (Server-Sent Events, no polling) while it runs; the audit timeline with an "as of"
// slider that shows the run as it was after any of its events.
"use strict";
(function () {
  const {el} = RL;
  const app = document.getElementById("app");
  const runId = RL.boot.run_id;
  const enc = encodeURIComponent;
  const state = {x: RL.query.get("x") === "time" ? "time" : "step", run: null, charts: new Map(), events: [],
                 source: null};

  const title = el("h1", {}, "Run ", el("code", {}, runId));
  const live = el("span", {id: "live"});
  const overview = el("div", {class: "cols", id: "overview"});
  const xToggle = el("select", {id: "x-axis"}, el("option", {value: "step"}, "x = step"), el("option", {value: "time"}, "x = time"));
  xToggle.value = state.x;
  const charts = el("div", {class: "charts", id: "charts"});
  const chartsNote = el("p", {class: "muted"}, "Drag across a chart to zoom in (finer buckets are fetched), double-click to zoom out. " +
    "The band is each bucket's min–max, the line its last value.");
  const timeline = el("div", {class: "timeline", id: "timeline"});
  const asof = el("div", {id: "asof"});
  app.replaceChildren(title, live, overview,
    el("h2", {}, "Metrics ", xToggle), chartsNote, charts,
    el("h2", {}, "Audit timeline"), asof, timeline);

  // ----- overview

  function overviewOf(run, target) {
    const info = run.info, data = run.data || {};
    const inputs = ((run.inputs || {}).dataset_inputs || []);
    const rows = [
      ["Name", info.run_name || ""], ["Run ID", info.run_id], ["Status", RL.statusBadge(info.status)],
      ["Experiment", el("a", {href: "/experiments/" + enc(info.experiment_id)}, info.experiment_id)],
      ["User", info.user_id || ""], ["Start", RL.time(info.start_time)], ["End", RL.time(info.end_time)],
      ["Duration", RL.duration(info.start_time && (info.end_time || (info.status === "RUNNING" ? Date.now() : null))
        ? (info.end_time || Date.now()) - info.start_time : null)],
      ["Lifecycle", info.lifecycle_stage || ""], ["Artifacts", info.artifact_uri || ""],
    ];
    const params = (data.params || []).slice().sort((a, b) => a.key.localeCompare(b.key));
    const tags = (data.tags || []).filter((t) => !t.key.startsWith("mlflow.log-model")).sort((a, b) => a.key.localeCompare(b.key));
    const metrics = (data.metrics || []).slice().sort((a, b) => a.key.localeCompare(b.key));
    target.replaceChildren(
      el("div", {class: "panel"}, el("h3", {}, "Info"), RL.kv(rows)),
      el("div", {class: "panel", id: "params"}, el("h3", {}, "Params (" + params.length + ")"),
         RL.kv(params.map((p) => [p.key, p.value]), "No params.")),
      el("div", {class: "panel", id: "latest-metrics"}, el("h3", {}, "Latest metrics (" + metrics.length + ")"),
         RL.kv(metrics.map((m) => [m.key, RL.num(m.value) + "  (step " + m.step + ")"]), "No metrics.")),
      el("div", {class: "panel", id: "tags"}, el("h3", {}, "Tags (" + tags.length + ")"),
         RL.kv(tags.map((t) => [t.key, t.value]), "No tags.")),
      el("div", {class: "panel", id: "datasets"}, el("h3", {}, "Dataset inputs (" + inputs.length + ")"),
         inputs.length ? el("table", {class: "grid"},
           el("thead", {}, el("tr", {}, ["Name", "Digest", "Context", "Source type", "Source"].map((h) => el("th", {}, h)))),
           el("tbody", {}, inputs.map((d) => {
             const ctx = (d.tags || []).find((t) => t.key === "mlflow.data.context");
             return el("tr", {}, el("td", {}, d.dataset.name), el("td", {}, d.dataset.digest),
               el("td", {}, ctx ? ctx.value : ""), el("td", {}, d.dataset.source_type || ""),
               el("td", {}, String(d.dataset.source || "").slice(0, 80)));
           }))) : el("p", {class: "muted"}, "No dataset inputs.")));
  }

  async function loadRun() {
    const body = await RL.get(RL.API + "/runs/" + enc(runId));
    state.run = body.run;
    title.replaceChildren("Run ", state.run.info.run_name || runId, " ", RL.statusBadge(state.run.info.status));
    document.title = (state.run.info.run_name || runId) + " · Runledger";
    overviewOf(state.run, overview);
    return state.run;
  }

  // ----- charts

  function chartFor(key) {
    let c = state.charts.get(key);
    if (c) return c;
    const box = el("div", {class: "chart", "data-key": key});
    const meta = el("div", {class: "meta"});
    box.append(el("h3", {}, key), meta);
    // keep the charts in key order
    const after = [...charts.children].find((n) => n.dataset.key > key);
    charts.insertBefore(box, after || null);
    c = {key, box, meta, range: null, generation: 0};
    c.plot = new RLPlot.Plot(box, {xKind: state.x, onZoom: (a, b) => {
      c.range = a === null ? null : [Math.floor(a), Math.ceil(b)];
      fetchChart(c);
    }});
    state.charts.set(key, c);
    return c;
  }

  async function fetchChart(c) {
    const mine = ++c.generation;
    const width = c.box.clientWidth || 600;
    try {
      const b = await RL.get(RL.API + "/metrics/history-buckets", {
        run_id: runId, metric_key: c.key, x: state.x, buckets: Math.max(50, Math.min(2000, Math.round(width))),
        start: c.range ? c.range[0] : null, end: c.range ? c.range[1] : null});
      if (mine !== c.generation) return;
      const col = b.buckets;
      c.plot.opts.xKind = state.x;
      c.plot.setSeries([{label: "", color: RL.COLORS[0], x: col.x_last, last: col.last, min: col.min, max: col.max}]);
      if (c.range) c.plot.setView(c.range[0], c.range[1]); else c.plot.setView(null);
      c.meta.textContent = b.points.toLocaleString() + " points" + (b.exact ? ", all drawn" : " in " + col.x_last.length + " buckets") +
        (c.range ? " (zoomed: " + state.x + " " + c.range[0] + "–" + c.range[1] + ")" : "");
    } catch (err) {
      if (mine === c.generation) c.meta.replaceChildren(RL.errorBox(err));
    }
  }

  function drawCharts() {
    const keys = (state.run.data.metrics || []).map((m) => m.key).sort();
    if (!keys.length && !state.charts.size) charts.replaceChildren(el("p", {class: "muted"}, "No metrics logged."));
    else if (!state.charts.size) charts.replaceChildren();
    return Promise.all(keys.map((k) => fetchChart(chartFor(k))));
  }

  xToggle.addEventListener("change", () => {
    state.x = xToggle.value;
    RL.setQuery({x: state.x === "time" ? "time" : ""});
    for (const c of state.charts.values()) { c.range = null; fetchChart(c); }
  });

  // ----- live follow: the run's tail stream says what was just committed

  const dirty = {keys: new Set(), info: false, timer: null};
  function schedule() {
    if (dirty.timer) return;
    // Entries arrive per committed batch; coalescing them into one refresh every 300 ms keeps a
    // fast logger from turning every batch into a round of requests.
    dirty.timer = setTimeout(async () => {
      dirty.timer = null;
      const keys = [...dirty.keys]; dirty.keys.clear();
      const info = dirty.info; dirty.info = false;
      try {
        if (info || keys.some((k) => !state.charts.has(k))) await loadRun();
      } catch (err) { /* shown on the next full load */ }
      for (const k of keys) {
        const c = state.charts.get(k) || chartFor(k);
        if (!c.range) fetchChart(c);
      }
      if (state.run && state.run.info.status !== "RUNNING") stopLive();
    }, 300);
  }
  function startLive() {
    if (state.source || !window.EventSource) return;
    const src = new EventSource(RL.API + "/runs/" + enc(runId) + "/tail");
    state.source = src;
    live.replaceChildren(el("span", {class: "badge live", title: "Following the run's events as they are committed"}, "● live"));
    src.onmessage = (e) => {
      let entry;
      try { entry = JSON.parse(e.data); } catch (x) { return; }
      addTimelineEntry(entry);
      if (entry.verdict && entry.verdict.status !== "applied") return;
      const s = entry.summary || {};
      if (Array.isArray(s.keys)) {
        if ((s.key_count || 0) > s.keys.length) for (const k of state.charts.keys()) dirty.keys.add(k);
        s.keys.forEach((k) => dirty.keys.add(k));
      }
      if (!Array.isArray(s.keys) || s.params || s.tags) dirty.info = true;
      if (s.points === undefined) dirty.info = true;
      schedule();
    };
  }
  function stopLive() {
    if (state.source) { state.source.close(); state.source = null; }
    live.replaceChildren();
  }

  // ----- audit timeline and "as of"

  function actorOf(a) {
    if (!a || !a.name) return el("span", {class: "muted"}, "anonymous");
    return el("span", {title: a.verified ? "verified identity" : "claimed, not verified"}, a.name + (a.verified ? " ✓" : ""));
  }
  function summaryText(s) {
    if (!s) return "";
    const t = JSON.stringify(s);
    return t.length > 160 ? t.slice(0, 157) + "…" : t;
  }
  function timelineRow(e, i) {
    const rejected = e.verdict.status !== "applied";
    return el("tr", {class: rejected ? "rejected" : "", "data-position": e.position},
      el("td", {class: "num"}, i + 1), el("td", {}, RL.time(e.time)), el("td", {}, e.type), el("td", {}, actorOf(e.actor)),
      el("td", {}, e.api || ""),
      el("td", {class: "verdict"}, rejected ? el("span", {class: "badge s-failed"}, "rejected") : el("span", {class: "badge s-finished"}, "applied")),
      el("td", {class: "reason"}, rejected ? (e.verdict.error_code || "") + (e.verdict.reason ? ": " + e.verdict.reason : "") : ""),
      el("td", {class: "muted"}, summaryText(e.summary)));
  }
  let tbody = null;
  function drawTimeline() {
    tbody = el("tbody", {}, state.events.map(timelineRow));
    timeline.replaceChildren(state.events.length ? el("table", {class: "grid", id: "audit"},
      el("thead", {}, el("tr", {}, ["#", "Time", "Event", "Actor", "API", "Verdict", "Reason", "Summary"].map((h) => el("th", {}, h)))),
      tbody) : el("p", {class: "muted"}, "No events."));
    drawSlider();
  }
  function addTimelineEntry(e) {
    if (state.events.some((x) => x.event_id === e.event_id)) return;
    state.events.push(e);
    if (tbody) tbody.append(timelineRow(e, state.events.length - 1)); else drawTimeline();
    if (slider) { slider.max = String(state.events.length - 1); if (following) slider.value = slider.max; sliderLabel(); }
  }
  async function loadTimeline() {
    const events = [];
    let token = null;
    for (let page = 0; page < 20; page++) {   // up to 20,000 events
      const body = await RL.get(RL.API + "/runs/" + enc(runId) + "/events", {max_results: 1000, page_token: token});
      events.push(...body.events);
      token = body.next_page_token;
      if (!token) break;
    }
    state.events = events;
    drawTimeline();
  }

  let slider = null, following = true;
  const asofLabel = el("span", {id: "asof-label"});
  const asofView = el("div", {class: "cols", id: "asof-view"});
  function sliderLabel() {
    const e = state.events[Number(slider.value)];
    following = Number(slider.value) === state.events.length - 1;
    asofLabel.textContent = e ? "after event " + (Number(slider.value) + 1) + " of " + state.events.length + ": " + e.type +
      " at " + RL.time(e.time) + (following ? " (now)" : "") : "";
  }
  function asOfPanels(run) {
    const data = run.data || {};
    asofView.replaceChildren(
      el("div", {class: "panel"}, el("h3", {}, "Params as of then"), RL.kv((data.params || []).map((p) => [p.key, p.value]), "No params.")),
      el("div", {class: "panel"}, el("h3", {}, "Tags as of then"), RL.kv((data.tags || []).map((t) => [t.key, t.value]), "No tags.")),
      el("div", {class: "panel"}, el("h3", {}, "Latest metrics as of then"),
         RL.kv((data.metrics || []).map((m) => [m.key, RL.num(m.value) + "  (step " + m.step + ")"]), "No metrics.")),
      el("div", {class: "panel"}, el("h3", {}, "Status as of then"), RL.kv([["Status", RL.statusBadge(run.info.status)],
         ["Name", run.info.run_name || ""], ["End", RL.time(run.info.end_time)]])));
  }
  const showAsOf = RL.debounce(async () => {
    const i = Number(slider.value), e = state.events[i];
    if (!e) return;
    // At the last event the run as of then is the run now: no need to fold its log again.
    if (i === state.events.length - 1 && state.run) { asOfPanels(state.run); return; }
    try {
      const body = await RL.get(RL.API + "/runs/" + enc(runId), {as_of_position: e.position});
      if (Number(slider.value) === i) asOfPanels(body.run);
    } catch (err) {
      RL.fail(asofView, err, "As-of read failed");
    }
  }, 200);
  function drawSlider() {
    if (!state.events.length) { asof.replaceChildren(); return; }
    slider = el("input", {type: "range", id: "asof-slider", min: 0, max: state.events.length - 1, step: 1, value: state.events.length - 1});
    slider.addEventListener("input", () => { sliderLabel(); showAsOf(); });
    asof.replaceChildren(el("div", {class: "asof"}, el("strong", {}, "As of"), slider, asofLabel), asofView);
    sliderLabel();
    showAsOf();
  }

  // ----- start

  (async function start() {
    try {
      await loadRun();
    } catch (err) {
      RL.fail(app, err, "Cannot show run " + runId);
      return;
    }
    if (state.run.info.status === "RUNNING") startLive();
    await Promise.all([
      // For `make bench` (bench/workloads/ui.py): navigation start -> every chart drawn.
      drawCharts().then(() => performance.mark("rl-charts-drawn")),
      loadTimeline().catch((err) => RL.fail(timeline, err, "Audit trail"))]);
    document.body.dataset.ready = "1";
  })();
})();
