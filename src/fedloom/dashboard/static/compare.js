// Several runs' metric per round on one chart.
"use strict";

(() => {
  const { el, fmt, getJSON, showError, clearError, lineChart, runLink } = window.fedloom;
  const params = new URLSearchParams(window.location.search);
  const runs = params.get("runs") || "";
  let metric = params.get("metric") || "test_accuracy";

  async function load() {
    try {
      const data = await getJSON("/api/compare?runs=" + encodeURIComponent(runs) +
        "&metric=" + encodeURIComponent(metric));
      const select = document.getElementById("metric");
      select.replaceChildren(...data.metrics.map((m) => el("option", { value: m }, m)));
      select.value = metric;
      const xs = [...new Set(data.runs.flatMap((r) => r.rounds))].sort((a, b) => a - b);
      const series = data.runs.map((r) => {
        const byRound = new Map(r.rounds.map((x, i) => [x, r.values[i]]));
        return { label: `${r.name} (${r.id})`, values: xs.map((x) => byRound.get(x) ?? null) };
      });
      document.getElementById("compare-caption").textContent = metric + " per round";
      lineChart(document.getElementById("chart-compare"), xs, series, { yLabel: metric });
      document.querySelector("#compare-runs tbody").replaceChildren(...data.runs.map((r) =>
        el("tr", { "data-run": r.id }, el("td", {}, runLink(r.id)), el("td", {}, r.name),
          el("td", {}, r.status), el("td", { class: "num" }, String(r.rounds.length)),
          el("td", { class: "num" }, fmt(r.values[r.values.length - 1])))));
      clearError();
      document.body.dataset.loaded = "true";
    } catch (error) {
      showError(error.message);
    }
  }

  document.getElementById("metric").addEventListener("change", (event) => {
    metric = event.target.value;
    const next = new URLSearchParams({ runs, metric });
    window.history.replaceState(null, "", "/compare?" + next.toString());
    load();
  });
  load();
})();
