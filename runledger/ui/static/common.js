// Shared helpers of the UI pages: DOM building, API calls whose errors carry the API's message,
// and formatting. Plain scripts (no modules, no build step): each page script uses window.RL.
"use strict";
(function () {
  const RL = {};
  RL.boot = JSON.parse(document.getElementById("boot").textContent || "{}");
  RL.API = "/api/runledger/v1";
  RL.MLFLOW = "/api/2.0/mlflow";

  // el("a", {href: "/x", class: "c"}, "text", child...) — attributes starting with "on" are listeners.
  RL.el = function (tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  };

  // An API error: the server's message (MLflow's {"error_code", "message"} shape) and status.
  class ApiError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }
  RL.ApiError = ApiError;

  async function failure(resp) {
    let code = "HTTP_" + resp.status, message = resp.statusText || "request failed";
    try {
      const body = await resp.json();
      if (body && body.message) message = body.message;
      else if (body && body.detail) message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      if (body && body.error_code) code = body.error_code;
    } catch (e) { /* not JSON: keep the status text */ }
    return new ApiError(resp.status, code, message);
  }

  RL.get = async function (path, params) {
    const url = new URL(path, location.origin);
    for (const [k, v] of Object.entries(params || {})) {
      if (v === null || v === undefined || v === "") continue;
      if (Array.isArray(v)) v.forEach((x) => url.searchParams.append(k, x));
      else url.searchParams.set(k, v);
    }
    const resp = await fetch(url, {headers: {Accept: "application/json"}});
    if (!resp.ok) throw await failure(resp);
    return resp.json();
  };

  RL.post = async function (path, body, raw) {
    const resp = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                    body: JSON.stringify(body)});
    if (!resp.ok) throw await failure(resp);
    return raw ? resp : resp.json();
  };

  // A visible error box with the API's message (and its code), replacing `where`'s content or,
  // with `append`, added at its end.
  RL.errorBox = function (err, prefix) {
    const code = err && err.code ? " (" + err.code + ")" : "";
    return RL.el("div", {class: "error", role: "alert"}, (prefix ? prefix + ": " : "") + (err && err.message || err) + code);
  };
  RL.fail = function (where, err, prefix) {
    where.replaceChildren(RL.errorBox(err, prefix));
  };

  RL.time = function (ms) {
    if (ms === null || ms === undefined) return "";
    const d = new Date(Number(ms));
    const pad = (n) => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  };
  RL.duration = function (ms) {
    if (ms === null || ms === undefined) return "";
    ms = Number(ms);
    if (ms < 1000) return ms + " ms";
    const s = ms / 1000;
    if (s < 60) return s.toFixed(1) + " s";
    const m = Math.floor(s / 60), h = Math.floor(m / 60);
    if (h < 1) return m + " min " + Math.round(s - m * 60) + " s";
    if (h < 48) return h + " h " + (m - h * 60) + " min";
    return Math.floor(h / 24) + " d " + (h % 24) + " h";
  };
  RL.num = function (v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "string") return v;
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(4);
    return String(Number(v.toPrecision(6)));
  };
  RL.kv = function (pairs, empty) {
    if (!pairs.length) return RL.el("p", {class: "muted"}, empty || "None.");
    return RL.el("table", {class: "kv"}, RL.el("tbody", {}, pairs.map(([k, v]) =>
      RL.el("tr", {}, RL.el("th", {}, k), RL.el("td", {}, v)))));
  };
  RL.statusBadge = function (status) {
    return RL.el("span", {class: "badge s-" + String(status || "").toLowerCase()}, status || "");
  };
  // Calls fn at most once per `ms`, with the latest arguments (trailing edge).
  RL.debounce = function (fn, ms) {
    let timer = null;
    return function (...args) {
      clearTimeout(timer);
      timer = setTimeout(() => fn.apply(this, args), ms);
    };
  };
  RL.setQuery = function (params) {
    const url = new URL(location.href);
    for (const [k, v] of Object.entries(params)) {
      if (v === null || v === undefined || v === "") url.searchParams.delete(k);
      else url.searchParams.set(k, v);
    }
    history.replaceState(null, "", url);
  };
  RL.query = new URL(location.href).searchParams;
  RL.COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
               "#7f7f7f", "#bcbd22"];
  window.RL = RL;
})();
