// An experiment's run table: run name, status, user, start, duration, chosen params and latest
// metrics; sort by any column (server-side, over every matching run), the runs/search filter
// grammar with its errors shown inline, paging, and a selection to compare.
"use strict";
(function () {
  const {el} = RL;
  const app = document.getElementById("app");
  const experimentId = RL.boot.experiment_id;
  const PAGE = 100;
  const q = RL.query;
  const state = {
    filter: q.get("filter") || "", sort: q.get("sort") || "start", order: q.get("order") || "desc",
    offset: Number(q.get("offset") || 0), params: null, metrics: null, selected: new Set(),
  };
  if (q.get("p") !== null) state.params = q.get("p").split(",").filter(Boolean);
  if (q.get("m") !== null) state.metrics = q.get("m").split(",").filter(Boolean);

  const title = el("h1", {}, "Runs");
  const filter = el("input", {type: "text", class: "filter", id: "run-filter", value: state.filter,
                              placeholder: "Filter, e.g. metrics.accuracy > 0.9 and params.lr = '0.01'"});
  const apply = el("button", {class: "primary", id: "apply-filter"}, "Filter");
  const filterError = el("div", {id: "filter-error"});
  const compare = el("button", {id: "compare-selected", disabled: true}, "Compare selected");
  const pickers = el("span", {class: "toolbar"});
  const pager = el("div", {class: "pager"});
  const table = el("div", {class: "scroll", id: "run-table"});
  app.replaceChildren(title, el("div", {class: "toolbar"}, filter, apply, compare, pickers), filterError, pager, table);

  let keys = {params: [], metrics: []};

  function picker(label, all, chosen, onChange) {
    const box = el("div", {});
    for (const k of all) {
      const cb = el("input", {type: "checkbox", checked: chosen.includes(k)});
      cb.addEventListener("change", () => {
        const now = [...box.querySelectorAll("input")].filter((c) => c.checked).map((c) => c.dataset.key);
        onChange(now);
      });
      cb.dataset.key = k;
      box.append(el("label", {}, cb, " ", k));
    }
    if (!all.length) box.append(el("span", {class: "muted"}, "none logged"));
    return el("details", {class: "picker"}, el("summary", {}, label + " (" + chosen.length + "/" + all.length + ")"), box);
  }
  function drawPickers() {
    pickers.replaceChildren(
      picker("Params", keys.params, state.params, (now) => { state.params = now; save(); load(); }),
      picker("Metrics", keys.metrics, state.metrics, (now) => { state.metrics = now; save(); load(); }));
  }
  function save() {
    RL.setQuery({filter: state.filter, sort: state.sort === "start" ? "" : state.sort,
                 order: state.order === "desc" ? "" : state.order, offset: state.offset || "",
                 p: state.params.join(","), m: state.metrics.join(",")});
  }

  function sortBy(column) {
    if (state.sort === column) state.order = state.order === "asc" ? "desc" : "asc";
    else { state.sort = column; state.order = column === "start" || column.startsWith("metric:") ? "desc" : "asc"; }
    state.offset = 0;
    save(); load();
  }
  function header(label, column) {
    const cls = "sortable" + (state.sort === column ? " sorted-" + state.order : "");
    return el("th", {class: cls, "data-sort": column, title: "Sort by " + label, onclick: () => sortBy(column)}, label);
  }

  function render(body) {
    const cols = [["Run", "name"], ["Status", "status"], ["User", "user"], ["Start", "start"], ["Duration", "duration"]];
    const head = el("tr", {}, el("th", {}, ""), cols.map(([l, c]) => header(l, c)),
      state.params.map((k) => header(k, "param:" + k)), state.metrics.map((k) => header(k, "metric:" + k)));
    const rows = body.runs.map((r) => {
      const cb = el("input", {type: "checkbox", checked: state.selected.has(r.run_id), "data-run": r.run_id});
      cb.addEventListener("change", () => {
        if (cb.checked) state.selected.add(r.run_id); else state.selected.delete(r.run_id);
        compare.disabled = state.selected.size < 1;
        compare.textContent = "Compare selected (" + state.selected.size + ")";
      });
      return el("tr", {"data-run-id": r.run_id},
        el("td", {}, cb),
        el("td", {}, el("a", {href: "/runs/" + encodeURIComponent(r.run_id), class: "run-name"}, r.run_name || r.run_id)),
        el("td", {}, RL.statusBadge(r.status)), el("td", {}, r.user_id || ""),
        el("td", {}, RL.time(r.start_time)), el("td", {class: "num"}, RL.duration(r.duration_ms)),
        state.params.map((k) => el("td", {}, r.params[k] === undefined ? "" : r.params[k])),
        state.metrics.map((k) => el("td", {class: "num"}, RL.num(r.metrics[k]))));
    });
    table.replaceChildren(el("table", {class: "grid"}, el("thead", {}, head), el("tbody", {}, rows)));
    const first = body.total ? body.offset + 1 : 0, last = body.offset + body.runs.length;
    const prev = el("button", {id: "prev-page", disabled: body.offset === 0,
                               onclick: () => { state.offset = Math.max(0, state.offset - PAGE); save(); load(); }}, "‹ Prev");
    const next = el("button", {id: "next-page", disabled: last >= body.total,
                               onclick: () => { state.offset += PAGE; save(); load(); }}, "Next ›");
    pager.replaceChildren(prev, next, el("span", {id: "run-count"}, first + "–" + last + " of " + body.total + " runs"));
    // For `make bench` (bench/workloads/ui.py): navigation start -> first table drawn.
    if (!performance.getEntriesByName("rl-table-drawn").length) performance.mark("rl-table-drawn");
  }

  let generation = 0;
  async function load() {
    const mine = ++generation;
    try {
      const body = await RL.get("/ui/api/experiments/" + encodeURIComponent(experimentId) + "/runs", {
        filter: state.filter, sort: state.sort, order: state.order, offset: state.offset, limit: PAGE,
        param: state.params, metric: state.metrics});
      if (mine !== generation) return;
      filterError.replaceChildren();
      render(body);
    } catch (err) {
      if (mine !== generation) return;
      // A filter the grammar refuses is a 400: shown under the box, the last good table stays.
      if (err.status === 400) filterError.replaceChildren(RL.errorBox(err));
      else RL.fail(table, err);
    }
  }

  function submit() { state.filter = filter.value.trim(); state.offset = 0; save(); load(); }
  apply.addEventListener("click", submit);
  filter.addEventListener("keydown", (e) => { if (e.key === "Enter") submit(); });
  compare.addEventListener("click", () => {
    location.href = "/compare?runs=" + encodeURIComponent([...state.selected].join(","));
  });

  (async function start() {
    // The keys first: the page of runs is read with the chosen param and metric columns.
    try {
      keys = await RL.get("/ui/api/experiments/" + encodeURIComponent(experimentId) + "/columns");
      title.textContent = "Runs of " + keys.name;
      document.title = keys.name + " · Runledger";
    } catch (err) {
      RL.fail(table, err);
      return;
    }
    if (state.params === null) state.params = keys.params.slice(0, 4);
    if (state.metrics === null) state.metrics = keys.metrics.slice(0, 4);
    drawPickers();
    load();
  })();
})();
