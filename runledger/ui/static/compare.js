// Compare runs: their curves overlaid per metric key (x = step or time since each run started),
// each from the bucketed history and refetched finer on zoom, and a table of their params with
// the rows that differ marked.
"use strict";
(function () {
  const {el} = RL;
  const app = document.getElementById("app");
  const enc = encodeURIComponent;
  const ids = (RL.query.get("runs") || "").split(",").map((s) => s.trim()).filter(Boolean);
  const state = {x: RL.query.get("x") === "time" ? "time" : "step", runs: [], charts: []};

  const idsBox = el("input", {type: "text", class: "filter", id: "compare-runs", value: ids.join(","),
                              placeholder: "Run ids, comma-separated (or select runs in a run table)"});
  const go = el("button", {class: "primary", onclick: () => { location.href = "/compare?runs=" + enc(idsBox.value.replace(/\s+/g, "")); }}, "Compare");
  const xToggle = el("select", {id: "x-axis"}, el("option", {value: "step"}, "x = step"),
                     el("option", {value: "time"}, "x = time since start"));
  xToggle.value = state.x;
  const legend = el("div", {class: "toolbar", id: "legend"});
  const charts = el("div", {class: "charts", id: "charts"});
  const diff = el("div", {id: "param-diff"});
  const onlyDiff = el("input", {type: "checkbox", id: "only-diff"});
  app.replaceChildren(el("h1", {}, "Compare runs"), el("div", {class: "toolbar"}, idsBox, go), legend,
    el("h2", {}, "Params ", el("label", {class: "muted"}, onlyDiff, " only rows that differ")), diff,
    el("h2", {}, "Metrics ", xToggle), charts);

  function drawDiff() {
    const keys = [...new Set(state.runs.flatMap((r) => (r.data.params || []).map((p) => p.key)))].sort();
    const values = state.runs.map((r) => Object.fromEntries((r.data.params || []).map((p) => [p.key, p.value])));
    const rows = [];
    for (const k of keys) {
      const vals = values.map((v) => v[k]);
      const differs = new Set(vals.map((v) => (v === undefined ? "\u0000" : v))).size > 1;
      if (onlyDiff.checked && !differs) continue;
      rows.push(el("tr", {class: differs ? "diff" : "", "data-key": k}, el("th", {}, k),
        vals.map((v) => el("td", {}, v === undefined ? el("span", {class: "muted"}, "—") : v))));
    }
    diff.replaceChildren(keys.length ? el("div", {class: "scroll"}, el("table", {class: "grid"},
      el("thead", {}, el("tr", {}, el("th", {}, "Param"), state.runs.map((r, i) =>
        el("th", {style: "color:" + RL.COLORS[i % RL.COLORS.length]}, r.info.run_name || r.info.run_id)))),
      el("tbody", {}, rows))) : el("p", {class: "muted"}, "No params."));
  }
  onlyDiff.addEventListener("change", drawDiff);

  async function fetchChart(c) {
    const mine = ++c.generation;
    const width = c.box.clientWidth || 600;
    try {
      const series = await Promise.all(state.runs.map(async (r, i) => {
        if (!r.keys.has(c.key)) return null;
        const offset = state.x === "time" ? (r.info.start_time || 0) : 0;
        const b = await RL.get(RL.API + "/metrics/history-buckets", {
          run_id: r.info.run_id, metric_key: c.key, x: state.x, buckets: Math.max(50, Math.min(2000, Math.round(width))),
          start: c.range ? Math.floor(c.range[0] + offset) : null, end: c.range ? Math.ceil(c.range[1] + offset) : null});
        const col = b.buckets;
        return {label: r.info.run_name || r.info.run_id, color: RL.COLORS[i % RL.COLORS.length],
                x: offset ? col.x_last.map((v) => v - offset) : col.x_last, last: col.last, min: col.min, max: col.max};
      }));
      if (mine !== c.generation) return;
      c.plot.opts.xKind = state.x === "time" ? "duration" : "step";
      c.plot.setSeries(series.filter(Boolean));
      if (c.range) c.plot.setView(c.range[0], c.range[1]); else c.plot.setView(null);
      c.meta.textContent = "";
    } catch (err) {
      if (mine === c.generation) c.meta.replaceChildren(RL.errorBox(err));
    }
  }

  function drawCharts() {
    const keys = [...new Set(state.runs.flatMap((r) => [...r.keys]))].sort();
    charts.replaceChildren();
    state.charts = keys.map((key) => {
      const box = el("div", {class: "chart", "data-key": key});
      const meta = el("div", {class: "meta"});
      box.append(el("h3", {}, key), meta);
      charts.append(box);
      const c = {key, box, meta, range: null, generation: 0};
      c.plot = new RLPlot.Plot(box, {xKind: state.x === "time" ? "duration" : "step", onZoom: (a, b) => {
        c.range = a === null ? null : [a, b];
        fetchChart(c);
      }});
      return c;
    });
    if (!keys.length) charts.append(el("p", {class: "muted"}, "These runs logged no metrics."));
    return Promise.all(state.charts.map(fetchChart));
  }
  xToggle.addEventListener("change", () => {
    state.x = xToggle.value;
    RL.setQuery({x: state.x === "time" ? "time" : ""});
    for (const c of state.charts) { c.range = null; fetchChart(c); }
  });

  (async function start() {
    if (!ids.length) {
      diff.replaceChildren(el("p", {class: "muted"}, "Select runs in an experiment's run table, then \"Compare selected\"."));
      return;
    }
    try {
      state.runs = await Promise.all(ids.map(async (id) => {
        const body = await RL.get(RL.API + "/runs/" + enc(id));
        body.run.keys = new Set((body.run.data.metrics || []).map((m) => m.key));
        return body.run;
      }));
    } catch (err) {
      RL.fail(diff, err);
      return;
    }
    legend.replaceChildren(...state.runs.map((r, i) => el("a", {href: "/runs/" + enc(r.info.run_id),
      style: "color:" + RL.COLORS[i % RL.COLORS.length] + ";font-weight:600"}, "■ " + (r.info.run_name || r.info.run_id))));
    drawDiff();
    await drawCharts();
    document.body.dataset.ready = "1";
  })();
})();
