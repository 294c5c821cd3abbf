// A small canvas chart for metric series summarised in buckets (min, max, last per bucket):
// each series is drawn as a band from min to max (so a spike is visible at any zoom) and a line
// through the last values. Drag across the chart to zoom in on x (the owner refetches finer
// buckets for that range), double-click to zoom out. Also bar charts for the SQL console.
// Written here rather than vendored: the needs are narrow (a few thousand points per chart) and
// a chart library would be the only file needing a JavaScript toolchain to rebuild.
"use strict";
(function () {
  const PAD = {left: 62, right: 12, top: 10, bottom: 30};

  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  }
  function ticks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    const step = niceStep(hi - lo, count);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(v);
    return out;
  }
  function fmtTick(v, step) {
    if (Math.abs(v) >= 1e6 || (Math.abs(v) < 1e-3 && v !== 0)) return v.toExponential(1);
    const decimals = Math.max(0, Math.min(6, -Math.floor(Math.log10(step || 1))));
    return v.toFixed(decimals);
  }
  function fmtTime(ms, span) {
    const d = new Date(ms), pad = (n) => String(n).padStart(2, "0");
    if (span > 2 * 86400e3) return (d.getMonth() + 1) + "/" + d.getDate() + " " + pad(d.getHours()) + "h";
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + (span < 600e3 ? ":" + pad(d.getSeconds()) : "");
  }
  function fmtDuration(ms) {
    const s = ms / 1000;
    if (Math.abs(s) < 120) return s.toFixed(s < 10 ? 1 : 0) + "s";
    if (Math.abs(s) < 7200) return (s / 60).toFixed(0) + "m";
    return (s / 3600).toFixed(1) + "h";
  }

  class Plot {
    // opts: {height, xKind: "step" | "time" | "duration", onZoom(x0, x1) (null, null = reset)}
    constructor(container, opts) {
      this.opts = Object.assign({height: 220, xKind: "step"}, opts || {});
      this.series = [];
      this.view = null;           // [x0, x1] shown, null = the data's extent
      this.wrap = document.createElement("div");
      this.wrap.className = "plot";
      this.canvas = document.createElement("canvas");
      this.readout = document.createElement("div");
      this.readout.className = "readout";
      this.wrap.append(this.canvas, this.readout);
      container.append(this.wrap);
      this.drag = null;
      this.hoverX = null;
      this.canvas.addEventListener("mousedown", (e) => this._down(e));
      window.addEventListener("mousemove", (e) => this._move(e));
      window.addEventListener("mouseup", (e) => this._up(e));
      this.canvas.addEventListener("mouseleave", () => { this.hoverX = null; this.draw(); });
      this.canvas.addEventListener("dblclick", () => { this.view = null; this.draw(); if (this.opts.onZoom) this.opts.onZoom(null, null); });
      this._resize = () => this.draw();
      window.addEventListener("resize", this._resize);
    }
    // series: [{label, color, x: [], last: [], min: [], max: []}]
    setSeries(series) { this.series = series; this.draw(); }
    setView(x0, x1) { this.view = x0 === null ? null : [x0, x1]; this.draw(); }

    extent() {
      let x0 = Infinity, x1 = -Infinity;
      for (const s of this.series) {
        if (!s.x.length) continue;
        x0 = Math.min(x0, s.x[0]); x1 = Math.max(x1, s.x[s.x.length - 1]);
      }
      return x0 <= x1 ? [x0, x1] : null;
    }
    _geometry() {
      const dpr = window.devicePixelRatio || 1;
      const w = Math.max(200, this.wrap.clientWidth || 600), h = this.opts.height;
      if (this.canvas.width !== Math.round(w * dpr) || this.canvas.height !== Math.round(h * dpr)) {
        this.canvas.width = Math.round(w * dpr); this.canvas.height = Math.round(h * dpr);
        this.canvas.style.width = w + "px"; this.canvas.style.height = h + "px";
      }
      return {w, h, dpr, pw: w - PAD.left - PAD.right, ph: h - PAD.top - PAD.bottom};
    }
    draw() {
      const g = this._geometry();
      const ctx = this.canvas.getContext("2d");
      ctx.setTransform(g.dpr, 0, 0, g.dpr, 0, 0);
      ctx.clearRect(0, 0, g.w, g.h);
      ctx.font = "11px system-ui, sans-serif";
      const ext = this.extent();
      if (!ext) {
        ctx.fillStyle = "#888"; ctx.fillText("no points", PAD.left + 8, PAD.top + 20);
        this.readout.textContent = ""; this.scale = null;
        return;
      }
      let [x0, x1] = this.view || ext;
      if (x1 === x0) { x0 -= 1; x1 += 1; }
      // y range over what is visible (min/max bands included, NaN and missing skipped)
      let y0 = Infinity, y1 = -Infinity;
      for (const s of this.series) {
        for (let i = 0; i < s.x.length; i++) {
          if (s.x[i] < x0 || s.x[i] > x1) continue;
          const lo = s.min ? s.min[i] : s.last[i], hi = s.max ? s.max[i] : s.last[i], v = s.last[i];
          for (const y of [lo, hi, v]) if (typeof y === "number" && isFinite(y)) { if (y < y0) y0 = y; if (y > y1) y1 = y; }
        }
      }
      if (!(y0 <= y1)) { y0 = 0; y1 = 1; }
      if (y0 === y1) { y0 -= Math.abs(y0) * 0.05 || 0.5; y1 += Math.abs(y1) * 0.05 || 0.5; }
      const padY = (y1 - y0) * 0.04; y0 -= padY; y1 += padY;
      const sx = (x) => PAD.left + (x - x0) / (x1 - x0) * g.pw;
      const sy = (y) => PAD.top + (1 - (y - y0) / (y1 - y0)) * g.ph;
      this.scale = {x0, x1, g};
      // grid and axes
      ctx.strokeStyle = "#e6e6e6"; ctx.fillStyle = "#555"; ctx.lineWidth = 1;
      const yt = ticks(y0, y1, 5), ys = yt.length > 1 ? yt[1] - yt[0] : 1;
      ctx.textAlign = "right"; ctx.textBaseline = "middle";
      for (const v of yt) {
        const y = Math.round(sy(v)) + 0.5;
        ctx.beginPath(); ctx.moveTo(PAD.left, y); ctx.lineTo(g.w - PAD.right, y); ctx.stroke();
        ctx.fillText(fmtTick(v, ys), PAD.left - 6, y);
      }
      const xt = ticks(x0, x1, Math.max(2, Math.floor(g.pw / 90))), xs = xt.length > 1 ? xt[1] - xt[0] : 1;
      ctx.textAlign = "center"; ctx.textBaseline = "top";
      for (const v of xt) {
        const x = Math.round(sx(v)) + 0.5;
        ctx.beginPath(); ctx.moveTo(x, PAD.top); ctx.lineTo(x, PAD.top + g.ph); ctx.stroke();
        const label = this.opts.xKind === "time" ? fmtTime(v, x1 - x0)
          : this.opts.xKind === "duration" ? fmtDuration(v) : fmtTick(v, xs);
        ctx.fillText(label, x, PAD.top + g.ph + 6);
      }
      ctx.strokeStyle = "#999";
      ctx.strokeRect(PAD.left + 0.5, PAD.top + 0.5, g.pw, g.ph);
      // series, clipped to the plot area
      ctx.save();
      ctx.beginPath(); ctx.rect(PAD.left, PAD.top, g.pw, g.ph); ctx.clip();
      for (const s of this.series) {
        const n = s.x.length;
        if (!n) continue;
        if (s.min && s.max) {     // the band: one vertical stroke per bucket whose min differs from its max
          ctx.strokeStyle = s.color; ctx.globalAlpha = 0.28; ctx.lineWidth = Math.max(1, g.pw / Math.max(n, 1) * 0.9);
          ctx.beginPath();
          for (let i = 0; i < n; i++) {
            const lo = s.min[i], hi = s.max[i];
            if (lo === null || hi === null || lo === hi) continue;
            const x = sx(s.x[i]);
            ctx.moveTo(x, sy(lo)); ctx.lineTo(x, sy(hi));
          }
          ctx.stroke();
          ctx.globalAlpha = 1;
        }
        ctx.strokeStyle = s.color; ctx.lineWidth = 1.5; ctx.lineJoin = "round";
        ctx.beginPath();
        let pen = false;
        for (let i = 0; i < n; i++) {
          const v = s.last[i];
          if (typeof v !== "number" || !isFinite(v)) { pen = false; continue; }
          const x = sx(s.x[i]), y = sy(v);
          if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
          pen = true;
        }
        ctx.stroke();
        if (n === 1 || n < g.pw / 8) {   // few points: mark them
          ctx.fillStyle = s.color;
          for (let i = 0; i < n; i++) {
            const v = s.last[i];
            if (typeof v === "number" && isFinite(v)) { ctx.beginPath(); ctx.arc(sx(s.x[i]), sy(v), 2, 0, 6.3); ctx.fill(); }
          }
        }
      }
      // the selection being dragged, the hover line
      if (this.drag && this.drag.moved) {
        ctx.fillStyle = "rgba(30, 100, 200, 0.15)";
        const a = Math.min(this.drag.from, this.drag.to), b = Math.max(this.drag.from, this.drag.to);
        ctx.fillRect(a, PAD.top, b - a, g.ph);
      }
      if (this.hoverX !== null) {
        ctx.strokeStyle = "#444"; ctx.setLineDash([3, 3]);
        ctx.beginPath(); ctx.moveTo(this.hoverX + 0.5, PAD.top); ctx.lineTo(this.hoverX + 0.5, PAD.top + g.ph); ctx.stroke();
        ctx.setLineDash([]);
      }
      ctx.restore();
      this._readout();
    }
    _xAt(px) { const s = this.scale; return s.x0 + (px - PAD.left) / s.g.pw * (s.x1 - s.x0); }
    _readout() {
      if (this.hoverX === null || !this.scale) { this.readout.textContent = ""; return; }
      const x = this._xAt(this.hoverX);
      const parts = [];
      for (const s of this.series) {
        if (!s.x.length) continue;
        let lo = 0, hi = s.x.length - 1;      // nearest bucket by binary search
        while (lo < hi) { const mid = (lo + hi) >> 1; if (s.x[mid] < x) lo = mid + 1; else hi = mid; }
        if (lo > 0 && Math.abs(s.x[lo - 1] - x) < Math.abs(s.x[lo] - x)) lo -= 1;
        const range = s.min && s.max && s.min[lo] !== s.max[lo] ? " [" + RL.num(s.min[lo]) + " … " + RL.num(s.max[lo]) + "]" : "";
        const xl = this.opts.xKind === "time" ? RL.time(s.x[lo]) : this.opts.xKind === "duration" ? fmtDuration(s.x[lo]) : s.x[lo];
        parts.push((s.label ? s.label + " " : "") + "@" + xl + ": " + RL.num(s.last[lo]) + range);
      }
      this.readout.textContent = parts.join("   ");
    }
    _px(e) { const r = this.canvas.getBoundingClientRect(); return Math.min(Math.max(e.clientX - r.left, PAD.left), PAD.left + (this.scale ? this.scale.g.pw : 0)); }
    _down(e) { if (!this.scale || e.button !== 0) return; const p = this._px(e); this.drag = {from: p, to: p, moved: false}; e.preventDefault(); }
    _move(e) {
      if (!this.scale) return;
      const r = this.canvas.getBoundingClientRect();
      const inside = e.clientX >= r.left && e.clientX <= r.right && e.clientY >= r.top && e.clientY <= r.bottom;
      if (this.drag) { this.drag.to = this._px(e); this.drag.moved = Math.abs(this.drag.to - this.drag.from) > 3; }
      if (inside || this.drag) { this.hoverX = this._px(e); this.draw(); }
    }
    _up() {
      if (!this.drag) return;
      const d = this.drag; this.drag = null;
      if (d.moved && this.scale) {
        const a = this._xAt(Math.min(d.from, d.to)), b = this._xAt(Math.max(d.from, d.to));
        this.view = [a, b];
        this.draw();
        if (this.opts.onZoom) this.opts.onZoom(a, b);
      } else this.draw();
    }
    destroy() { window.removeEventListener("resize", this._resize); this.wrap.remove(); }
  }

  // Bars of `values` labelled by `labels` (the SQL console's bar chart).
  function drawBars(container, labels, values, color) {
    const canvas = document.createElement("canvas");
    const wrap = document.createElement("div"); wrap.className = "plot"; wrap.append(canvas); container.append(wrap);
    const dpr = window.devicePixelRatio || 1, w = Math.max(300, wrap.clientWidth || 600), h = 260;
    canvas.width = w * dpr; canvas.height = h * dpr; canvas.style.width = w + "px"; canvas.style.height = h + "px";
    const ctx = canvas.getContext("2d"); ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.font = "11px system-ui, sans-serif";
    const nums = values.map((v) => (typeof v === "number" && isFinite(v) ? v : 0));
    let y0 = Math.min(0, ...nums), y1 = Math.max(0, ...nums);
    if (y0 === y1) y1 = y0 + 1;
    const pw = w - PAD.left - PAD.right, ph = h - PAD.top - PAD.bottom;
    const sy = (y) => PAD.top + (1 - (y - y0) / (y1 - y0)) * ph;
    const yt = ticks(y0, y1, 5), ys = yt.length > 1 ? yt[1] - yt[0] : 1;
    ctx.strokeStyle = "#e6e6e6"; ctx.fillStyle = "#555"; ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (const v of yt) { const y = Math.round(sy(v)) + 0.5; ctx.beginPath(); ctx.moveTo(PAD.left, y); ctx.lineTo(w - PAD.right, y); ctx.stroke(); ctx.fillText(fmtTick(v, ys), PAD.left - 6, y); }
    const bw = pw / Math.max(1, nums.length);
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    const every = Math.ceil(nums.length / Math.max(1, Math.floor(pw / 60)));
    nums.forEach((v, i) => {
      ctx.fillStyle = color || "#1f77b4";
      const top = sy(Math.max(v, 0)), bottom = sy(Math.min(v, 0));
      ctx.fillRect(PAD.left + i * bw + bw * 0.1, top, Math.max(1, bw * 0.8), Math.max(1, bottom - top));
      if (i % every === 0) { ctx.fillStyle = "#555"; ctx.fillText(String(labels[i]).slice(0, 12), PAD.left + (i + 0.5) * bw, PAD.top + ph + 6); }
    });
    ctx.strokeStyle = "#999"; ctx.strokeRect(PAD.left + 0.5, PAD.top + 0.5, pw, ph);
    return canvas;
  }

  window.RLPlot = {Plot, drawBars};
})();
