// Small building blocks every view uses: elements (text is always set as
// text, never parsed as HTML), times, badges and the live charts, drawn on
// a canvas by the page itself.

/** `el("td", { class: "x", dataset: { id } }, child, "text")`. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replaces the children of `node`. */
export function fill(node, ...children) {
  node.replaceChildren();
  for (const child of children.flat(Infinity)) {
    if (child !== undefined && child !== null && child !== false) node.append(child);
  }
  return node;
}

export function badge(text, kind = text) {
  return el("span", { class: `badge ${kind}` }, text);
}

/** Clock time of a Unix-ms instant (local time zone), with the date when not today. */
export function clock(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  const today = new Date();
  const time = d.toLocaleTimeString([], { hour12: false });
  return d.toDateString() === today.toDateString() ? time : `${d.toISOString().slice(0, 10)} ${time}`;
}

/** "1.2s", "3m 04s", "2h 05m". */
export function duration(ms) {
  if (ms === null || ms === undefined || ms < 0) return "";
  if (ms < 1000) return `${ms}ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${(ms / 1000).toFixed(1)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

/** "12s ago" for a duration in milliseconds. */
export function ago(ms) {
  return ms === null || ms === undefined ? "unknown" : `${duration(ms)} ago`;
}

/** The command of a job as one line. */
export function commandOf(job) {
  if (job.command !== null && job.command !== undefined) return job.command;
  return (job.args || []).map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(" ");
}

/** A number with thousands separators. */
export const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString());

/**
 * A rolling chart of the last `points` samples of one or more series,
 * drawn on a canvas; `push([v1, v2…])` adds a sample and redraws.
 */
export class Chart {
  constructor(title, series, points = 120) {
    this.series = series; // [{ name, color: CSS custom property }]
    this.points = points;
    this.samples = [];
    this.canvas = el("canvas", { width: 300, height: 70, role: "img", "aria-label": title });
    this.legend = el("div", { class: "muted" });
    this.node = el("div", { class: "card chart" }, el("div", { class: "label" }, title), this.canvas, this.legend);
  }

  push(values) {
    this.samples.push(values);
    if (this.samples.length > this.points) this.samples.shift();
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const width = c.clientWidth || 300;
    const ratio = window.devicePixelRatio || 1;
    if (c.width !== Math.round(width * ratio)) {
      c.width = Math.round(width * ratio);
      c.height = Math.round(70 * ratio);
    }
    const g = c.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, 70);
    const max = Math.max(1, ...this.samples.flat());
    const style = getComputedStyle(document.documentElement);
    this.series.forEach((s, i) => {
      g.strokeStyle = style.getPropertyValue(s.color).trim() || "#888";
      g.lineWidth = 1.5;
      g.beginPath();
      this.samples.forEach((sample, x) => {
        const px = (x / Math.max(1, this.points - 1)) * width;
        const py = 66 - (sample[i] / max) * 62;
        if (x === 0) g.moveTo(px, py); else g.lineTo(px, py);
      });
      g.stroke();
    });
    const last = this.samples[this.samples.length - 1] || [];
    this.legend.textContent = this.series
      .map((s, i) => `${s.name} ${num(Math.round((last[i] || 0) * 10) / 10)}`)
      .join(" · ") + ` (max ${num(Math.round(max * 10) / 10)})`;
  }
}
