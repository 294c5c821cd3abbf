// SQL console over the public views (POST /api/runledger/v1/sql): results as a table, CSV or
// Parquet download of the same query, and a one-click line or bar chart of two result columns.
"use strict";
(function () {
  const {el} = RL;
  const app = document.getElementById("app");
  const EXAMPLE = "SELECT r.run_name, m.key, m.value\nFROM runs r JOIN latest_metrics m USING (run_id)\nORDER BY m.value DESC\nLIMIT 50";
  const box = el("textarea", {class: "sql", id: "sql-query", spellcheck: "false"});
  box.value = RL.query.get("q") || localStorage.getItem("runledger.sql") || EXAMPLE;
  const run = el("button", {class: "primary", id: "sql-run"}, "Run (Ctrl+Enter)");
  const maxRows = el("input", {type: "text", id: "sql-max-rows", value: "1000", size: 6, title: "At most this many rows"});
  const csv = el("button", {id: "sql-csv"}, "Download CSV");
  const parquet = el("button", {id: "sql-parquet"}, "Download Parquet");
  const status = el("div", {class: "muted", id: "sql-status"});
  const chartBar = el("div", {class: "toolbar", id: "sql-chart-controls"});
  const chartArea = el("div", {id: "sql-chart"});
  const result = el("div", {class: "scroll", id: "sql-result"});
  app.replaceChildren(el("h1", {}, "SQL"),
    el("p", {class: "muted"}, "Read-only SQL over the public views: runs, params, tags, metrics, latest_metrics, experiments, events …"),
    box, el("div", {class: "toolbar"}, run, el("label", {}, "max rows ", maxRows), csv, parquet), status, chartBar, chartArea, result);

  let answer = null;

  async function execute() {
    localStorage.setItem("runledger.sql", box.value);
    status.textContent = "Running…";
    run.disabled = true;
    try {
      answer = await RL.post(RL.API + "/sql", {query: box.value, format: "json", max_rows: Number(maxRows.value) || 1000});
      status.textContent = answer.row_count + " rows" + (answer.truncated ? " (truncated to max rows)" : "") +
        " in " + answer.elapsed_ms.toFixed(1) + " ms";
      drawTable();
      drawChartControls();
    } catch (err) {
      answer = null;
      status.replaceChildren(RL.errorBox(err));
      result.replaceChildren(); chartBar.replaceChildren(); chartArea.replaceChildren();
    } finally {
      run.disabled = false;
    }
  }
  function cell(v) {
    if (v === null || v === undefined) return el("td", {class: "muted"}, "NULL");
    if (typeof v === "number") return el("td", {class: "num"}, RL.num(v));
    if (typeof v === "object") return el("td", {}, JSON.stringify(v));
    return el("td", {}, String(v));
  }
  function drawTable() {
    result.replaceChildren(el("table", {class: "grid", id: "sql-table"},
      el("thead", {}, el("tr", {}, answer.columns.map((c) => el("th", {title: c.type}, c.name)))),
      el("tbody", {}, answer.rows.map((row) => el("tr", {}, row.map(cell))))));
  }
  function drawChartControls() {
    chartArea.replaceChildren();
    if (!answer.columns.length) { chartBar.replaceChildren(); return; }
    const opts = () => answer.columns.map((c, i) => el("option", {value: i}, c.name));
    const xs = el("select", {id: "chart-x"}, opts()), ys = el("select", {id: "chart-y"}, opts());
    const numeric = answer.columns.findIndex((c, i) => i > 0 && /INT|DOUBLE|FLOAT|DECIMAL|REAL|NUMERIC/.test(c.type));
    ys.value = String(numeric > 0 ? numeric : Math.min(1, answer.columns.length - 1));
    const line = el("button", {id: "chart-line"}, "Line chart"), bar = el("button", {id: "chart-bar"}, "Bar chart");
    line.addEventListener("click", () => chart("line", Number(xs.value), Number(ys.value)));
    bar.addEventListener("click", () => chart("bar", Number(xs.value), Number(ys.value)));
    chartBar.replaceChildren(el("span", {}, "Chart"), el("label", {}, "x ", xs), el("label", {}, "y ", ys), line, bar);
  }
  function toNumber(v) {
    if (typeof v === "number") return v;
    if (typeof v === "string") { const t = Date.parse(v); const n = Number(v); return isFinite(n) ? n : (isFinite(t) ? t : NaN); }
    return NaN;
  }
  function chart(kind, xi, yi) {
    chartArea.replaceChildren();
    const ys = answer.rows.map((r) => toNumber(r[yi]));
    if (kind === "bar") {
      RLPlot.drawBars(chartArea, answer.rows.map((r) => r[xi]), ys);
      return;
    }
    let xs = answer.rows.map((r) => toNumber(r[xi]));
    const labels = xs.some((x) => !isFinite(x));
    if (labels) xs = answer.rows.map((_, i) => i);        // text on x: rows in result order
    const order = xs.map((_, i) => i).sort((a, b) => xs[a] - xs[b]);
    const plot = new RLPlot.Plot(chartArea, {xKind: /TIMESTAMP|DATE/.test(answer.columns[xi].type) ? "time" : "step"});
    plot.setSeries([{label: answer.columns[yi].name, color: RL.COLORS[0], x: order.map((i) => xs[i]), last: order.map((i) => ys[i])}]);
  }
  async function download(format) {
    try {
      const resp = await RL.post(RL.API + "/sql", {query: box.value, format}, true);
      const blob = await resp.blob();
      const a = el("a", {href: URL.createObjectURL(blob), download: "runledger-query." + format});
      document.body.append(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    } catch (err) {
      status.replaceChildren(RL.errorBox(err));
    }
  }
  run.addEventListener("click", execute);
  box.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); execute(); } });
  csv.addEventListener("click", () => download("csv"));
  parquet.addEventListener("click", () => download("parquet"));
  if (RL.query.get("q")) execute();
})();
