// The runs list and, when the dashboard sits beside a running server, the live federation.
"use strict";

(() => {
  const { el, fmt, getJSON, showError, clearError, runLink } = window.fedloom;
  let pollSeconds = 2;
  let shownRuns = "";

  function renderRuns(runs) {
    const body = document.querySelector("#runs tbody");
    body.replaceChildren(...runs.map((run) => el("tr", { "data-run": run.id },
      el("td", {}, el("input", { type: "checkbox", name: "run", value: run.id,
        "aria-label": "compare " + run.id })),
      el("td", {}, runLink(run.id)),
      el("td", { class: "run-name" }, run.name),
      el("td", {}, el("span", { class: "status " + run.status }, run.status)),
      el("td", { class: "num" }, String(run.rounds_done)),
      el("td", { class: "num" }, fmt(run.last_metrics.test_accuracy)),
      el("td", {}, run.created),
      el("td", {}, run.stopped))));
  }

  function ago(now, then) {
    if (typeof then !== "number") return "never";
    return (Math.max(0, now - then)).toFixed(1) + " s ago";
  }

  // "Round 3 of run R: 1 of 2 updates received (2 sent, 0 failed)." A deployed server also
  // reports its tasks sent and failed, and the evaluation phase of a round.
  function progressText(p) {
    const what = p.phase === "evaluate" ? "evaluations" : "updates";
    const more = [];
    if (typeof p.sent === "number") more.push(`${p.sent} sent`);
    if (typeof p.sent === "number" || p.failed) more.push(`${p.failed} failed`);
    return `Round ${p.round}${p.run_id ? " of run " + p.run_id : ""}: ` +
      `${p.received} of ${p.expected} ${what} received` +
      (more.length ? ` (${more.join(", ")})` : "") + ".";
  }

  function renderLive(live) {
    const section = document.getElementById("federation");
    section.hidden = !live.available;
    if (!live.available) return;
    const p = live.progress;
    document.getElementById("progress").textContent = p === null ? "No round in flight." : progressText(p);
    document.querySelector("#sites tbody").replaceChildren(...live.sites.map((s) =>
      el("tr", { "data-site": s.site_id },
        el("td", {}, s.site_id), el("td", { class: "site-identity" }, s.identity),
        el("td", {}, s.address), el("td", {}, s.state),
        el("td", {}, ago(live.now, s.last_heartbeat)))));
  }

  // Compare needs ?runs=a,b: gather the ticked boxes into one parameter.
  document.getElementById("compare-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const ids = [...document.querySelectorAll("#runs input[name=run]:checked")].map((b) => b.value);
    if (ids.length === 0) { showError("Tick at least one run to compare."); return; }
    window.location.assign("/compare?runs=" + ids.map(encodeURIComponent).join(","));
  });

  async function refresh() {
    try {
      const [runs, live] = await Promise.all([getJSON("/api/runs"), getJSON("/api/live")]);
      const text = JSON.stringify(runs);
      if (text !== shownRuns) { // redraw only on news, keeping the ticked boxes
        const ticked = new Set([...document.querySelectorAll("#runs input[name=run]:checked")]
          .map((b) => b.value));
        renderRuns(runs);
        for (const box of document.querySelectorAll("#runs input[name=run]")) {
          box.checked = ticked.has(box.value);
        }
        shownRuns = text;
      }
      renderLive(live);
      clearError();
      document.body.dataset.loaded = "true";
    } catch (error) {
      showError(error.message);
    }
    window.setTimeout(refresh, pollSeconds * 1000);
  }

  getJSON("/api/info").then((info) => { pollSeconds = info.poll_seconds; })
    .catch((error) => showError(error.message)).finally(refresh);
})();
