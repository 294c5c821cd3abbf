// The start page: experiments, searchable by name, with their run counts.
"use strict";
(function () {
  const {el} = RL;
  const app = document.getElementById("app");
  const search = el("input", {type: "search", placeholder: "Search experiments by name", id: "experiment-search",
                              value: RL.query.get("q") || "", class: "filter"});
  const result = el("div", {id: "experiments"});
  app.replaceChildren(el("h1", {}, "Experiments"), el("div", {class: "toolbar"}, search), result);

  let generation = 0;
  async function load() {
    const mine = ++generation;
    RL.setQuery({q: search.value});
    try {
      const body = await RL.get("/ui/api/experiments", {q: search.value});
      if (mine !== generation) return;
      if (!body.experiments.length) {
        result.replaceChildren(el("p", {class: "muted"}, search.value ? "No experiment matches." : "No experiments yet."));
        return;
      }
      result.replaceChildren(el("table", {class: "grid"},
        el("thead", {}, el("tr", {}, ["Name", "ID", "Runs", "Running", "Created", "Last update"].map((h) => el("th", {}, h)))),
        el("tbody", {}, body.experiments.map((e) => el("tr", {},
          el("td", {}, el("a", {href: "/experiments/" + encodeURIComponent(e.experiment_id)}, e.name)),
          el("td", {}, e.experiment_id), el("td", {class: "num"}, e.runs), el("td", {class: "num"}, e.running),
          el("td", {}, RL.time(e.creation_time)), el("td", {}, RL.time(e.last_update_time)))))));
    } catch (err) {
      if (mine === generation) RL.fail(result, err);
    }
  }
  search.addEventListener("input", RL.debounce(load, 150));
  load();
})();
