// Shared helpers for the dashboard's pages. Everything shown is built with DOM text nodes:
// no string from the API is ever parsed as HTML.
"use strict";

window.fedloom = (() => {
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
    "#17becf", "#7f7f7f", "#bcbd22"];

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" },
      credentials: "same-origin" });
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (!response.ok) {
      const reason = body && typeof body.error === "string" ? body.error : response.statusText;
      const error = new Error(reason);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  // el("td", {class: "num"}, "text", childNode): an element with attributes and children.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (key === "class") node.className = value;
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmt(value, digits = 4) {
    return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "–";
  }

  function fmtInt(value) {
    return typeof value === "number" && Number.isFinite(value) ? String(Math.round(value)) : "–";
  }

  function showError(message) {
    const box = document.getElementById("error");
    box.textContent = message;
    box.hidden = false;
  }

  function clearError() {
    const box = document.getElementById("error");
    box.textContent = "";
    box.hidden = true;
  }

  function runLink(id) {
    return el("a", { href: "/runs/" + encodeURIComponent(id) }, id);
  }

  // A line chart of several series over rounds, redrawn in place when called again.
  // series: [{label, values}], xs: round numbers; values may hold null (a gap).
  function lineChart(container, xs, series, { yLabel = "", extra = [] } = {}) {
    const all = series.concat(extra);
    const shape = all.map((s) => s.label).join("\u0000");
    const data = [xs, ...all.map((s) => s.values)];
    if (container.uplot && container.uplotShape === shape) {
      container.uplot.setData(data);
      return container.uplot;
    }
    if (container.uplot) container.uplot.destroy();
    const width = Math.max(container.clientWidth || 0, 320);
    const opts = {
      width,
      height: 240,
      scales: { x: { time: false } },
      // Rounds are whole numbers: no tick between two of them.
      axes: [{ label: "round", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000] },
        { label: yLabel, size: 70 }],
      series: [{ label: "round" }].concat(all.map((s, i) => ({
        label: s.label,
        stroke: s.color || COLORS[i % COLORS.length],
        width: 2,
        dash: s.dash,
        points: { show: xs.length <= 60 },
        spanGaps: true,
      }))),
    };
    container.uplot = new uPlot(opts, data, container);
    container.uplotShape = shape;
    return container.uplot;
  }

  return { COLORS, getJSON, el, fmt, fmtInt, showError, clearError, runLink, lineChart };
})();
