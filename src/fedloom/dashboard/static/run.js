// One run: facts, charts per round (polled while the run is in progress), rounds, clients,
// privacy and secure aggregation when the run reports them, the audit trail with its
// verification, and the token-guarded stop.
"use strict";

(() => {
  const { el, fmt, fmtInt, getJSON, showError, clearError, lineChart } = window.fedloom;
  const runId = decodeURIComponent(window.location.pathname.split("/")[2] || "");
  const base = "/api/runs/" + encodeURIComponent(runId);
  const rounds = new Map(); // round number -> round JSON
  let pollSeconds = 2;
  let control = false;
  let wasRunning = false; // one more refresh after a run ends: its last entries and facts
  let sites = null; // a deployed run's site names by client index (its certificates' identities)

  // A client as shown: its site's name in a deployed run, else its index in the population.
  function clientLabel(client) {
    return sites !== null && typeof sites[client] === "string" ? sites[client] : String(client);
  }

  function metricSeries(names, list) {
    return names
      .filter((name) => list.some((r) => typeof r.metrics[name] === "number"))
      .map((name) => ({ label: name, values: list.map((r) => r.metrics[name] ?? null) }));
  }

  function renderFacts(run) {
    document.title = run.name + " · fedloom";
    document.getElementById("run-name").textContent = run.name;
    const status = document.getElementById("run-status");
    status.textContent = run.status;
    status.className = "status " + run.status;
    const facts = [["run", run.id], ["rounds done", String(run.rounds_done)], ["seed", String(run.seed)],
      ["created", run.created], ["finished", run.finished || "–"],
      ["duration", run.duration === null ? "–" : run.duration.toFixed(1) + " s"],
      ["stopped", run.stopped || "–"], ["code", run.code_version]];
    sites = Array.isArray(run.sites) ? run.sites : null;
    if (sites !== null) facts.push(["sites", sites.join(", ")]);
    document.getElementById("run-facts").replaceChildren(...facts.flatMap(([k, v]) =>
      [el("dt", {}, k), el("dd", { "data-fact": k }, v)]));
    document.getElementById("config").textContent = run.config === null
      ? "(not a TOML run file)" : JSON.stringify(run.config, null, 2);
    document.getElementById("stop").hidden = !(control && run.status === "running");
    document.body.dataset.status = run.status;
  }

  function renderPrivacy(privacy) {
    const box = document.getElementById("privacy");
    box.hidden = privacy === null;
    if (privacy === null) return;
    const extra = privacy.budget === null ? [] : [{ label: "budget",
      values: privacy.rounds.map(() => privacy.budget), color: "#7f7f7f", dash: [6, 4] }];
    lineChart(document.getElementById("chart-privacy"), privacy.rounds,
      [{ label: "ε spent", values: privacy.epsilon }], { yLabel: "ε", extra });
    const last = privacy.epsilon[privacy.epsilon.length - 1];
    document.getElementById("privacy-summary").textContent =
      `ε spent ${fmt(last, 3)}` + (privacy.budget === null ? " (no budget set)" : ` of ${fmt(privacy.budget, 3)}`) +
      (privacy.delta === null ? "" : `, δ = ${privacy.delta}`);
  }

  function renderSecagg(secagg) {
    const box = document.getElementById("secagg");
    box.hidden = secagg === null;
    if (secagg === null) return;
    document.getElementById("secagg-summary").textContent =
      `On in ${secagg.rounds.length} round(s); ${secagg.aborted.length} aborted.`;
    document.getElementById("secagg-aborted").replaceChildren(...secagg.aborted.map((a) =>
      el("li", {}, `round ${a.round}: ${a.reason}`)));
  }

  function renderRounds() {
    const list = [...rounds.values()].sort((a, b) => a.round - b.round);
    document.querySelector("#rounds tbody").replaceChildren(...list.map((r) =>
      el("tr", { "data-round": r.round },
        el("td", { class: "num" }, String(r.round)),
        el("td", { class: "num", "data-col": "accepted" }, `${r.accepted.length}/${r.cohort}`),
        el("td", { class: "num", "data-col": "dropped" }, String(r.dropped.length)),
        el("td", { class: "num", "data-col": "straggled" }, String(r.straggled.length)),
        el("td", { class: "num", "data-col": "rejected" }, String(r.rejected.length)),
        el("td", { class: "num", "data-col": "test_accuracy" }, fmt(r.metrics.test_accuracy)),
        el("td", { class: "num", "data-col": "test_loss" }, fmt(r.metrics.test_loss)),
        el("td", { class: "num", "data-col": "train_loss" }, fmt(r.metrics.train_loss)),
        el("td", { class: "num", "data-col": "bytes_up" }, fmtInt(r.bytes_up)),
        el("td", { class: "num", "data-col": "bytes_down" }, fmtInt(r.bytes_down)),
        el("td", { "data-col": "aborted" }, r.aborted || ""))));
    const xs = list.map((r) => r.round);
    lineChart(document.getElementById("chart-accuracy"), xs,
      metricSeries(["test_accuracy", "client_test_accuracy", "train_accuracy"], list), { yLabel: "accuracy" });
    lineChart(document.getElementById("chart-loss"), xs,
      metricSeries(["train_loss", "test_loss", "client_test_loss"], list), { yLabel: "loss" });
    lineChart(document.getElementById("chart-bytes"), xs, [
      { label: "bytes up", values: list.map((r) => r.bytes_up) },
      { label: "bytes down", values: list.map((r) => r.bytes_down) }], { yLabel: "bytes" });
    const last = list[list.length - 1];
    if (last) renderClients(last);
    document.body.dataset.rounds = String(list.length);
  }

  function renderClients(r) {
    document.getElementById("clients-round").textContent = String(r.round);
    document.getElementById("clients-accepted").textContent =
      r.accepted.length ? r.accepted.map(clientLabel).join(", ") : "none";
    const rows = [];
    for (const kind of ["dropped", "straggled", "rejected"]) {
      for (const c of r[kind]) {
        rows.push(el("tr", { "data-kind": kind, "data-client": c.client },
          el("td", {}, clientLabel(c.client)), el("td", {}, kind), el("td", {}, c.reason)));
      }
    }
    document.querySelector("#clients-out tbody").replaceChildren(...rows);
  }

  function renderAudit(audit) {
    const v = audit.verification;
    const result = document.getElementById("audit-result");
    if (v.ok) {
      result.textContent = audit.total === 0 ? "No audit entries recorded for this run."
        : `Verified: all ${v.entries} entries are intact and in order (SHA-256 hash chain).`;
    } else {
      result.textContent = `Verification FAILED at ${v.problem.text}. The first ${v.entries} ` +
        "entries check out; from this one on, the record cannot be trusted.";
    }
    result.className = v.ok ? "audit-ok" : "audit-bad";
    result.dataset.ok = String(v.ok);
    document.getElementById("audit-head-label").textContent =
      v.ok ? "Head hash (publish it to anchor the trail)" : "Hash of the last entry that checks out";
    document.getElementById("audit-head").textContent = v.head;
    document.querySelector("#audit-entries tbody").replaceChildren(...audit.entries.map((e) =>
      el("tr", { "data-seq": e.seq, class: e.state },
        el("td", { class: "num" }, String(e.seq)),
        el("td", { "data-col": "kind" }, e.kind),
        el("td", { class: "time" }, e.created),
        el("td", {}, el("code", {}, e.hash)),
        el("td", { "data-col": "summary" }, e.summary))));
  }

  async function refresh() {
    let running = false;
    try {
      const since = rounds.size ? Math.max(...rounds.keys()) + 1 : 0;
      const [run, fresh, audit] = await Promise.all([getJSON(base),
        getJSON(`${base}/rounds?since=${since}`), getJSON(`${base}/audit`)]);
      for (const r of fresh.rounds) rounds.set(r.round, r);
      renderFacts(run);
      if (fresh.rounds.length > 0 || document.body.dataset.rounds === undefined) renderRounds();
      renderPrivacy(run.privacy);
      renderSecagg(run.secure_aggregation);
      renderAudit(audit);
      clearError();
      running = run.status === "running";
      document.body.dataset.loaded = "true";
    } catch (error) {
      showError(error.message);
      running = true; // try again: the store may be locked for a moment
    }
    const again = running || wasRunning;
    wasRunning = running;
    if (again) window.setTimeout(refresh, pollSeconds * 1000);
  }

  document.getElementById("stop-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("stop-token");
    const result = document.getElementById("stop-result");
    const response = await fetch(`${base}/stop`, { method: "POST", credentials: "same-origin",
      headers: { Authorization: "Bearer " + input.value } });
    input.value = "";
    let body = {};
    try { body = await response.json(); } catch (_) { body = {}; }
    result.className = response.ok ? "accepted-note" : "refused";
    result.textContent = response.ok
      ? "Stop requested: " + body.note
      : `Refused (${response.status}): ${body.error || response.statusText}`;
  });

  getJSON("/api/info").then((info) => { pollSeconds = info.poll_seconds; control = info.control; })
    .catch((error) => showError(error.message)).finally(refresh);
})();
