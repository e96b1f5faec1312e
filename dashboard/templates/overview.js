"use strict";
// Overview: throughput, acceptance with swap markers, requests and errors, learning, trace bus, workers.
(() => {
  const B = Borealis;
  const MINUTES = 15;

  function recent(buckets, seconds) {
    const cutoff = Date.now() / 1000 - seconds;
    return buckets.filter((b) => b.start + b.seconds > cutoff);
  }
  function sum(buckets, key) { return buckets.reduce((n, b) => n + b[key], 0); }

  function kpis(buckets) {
    const minute = recent(buckets, 60);
    const seconds = minute.reduce((n, b) => n + b.seconds, 0);
    document.getElementById("kpi-tps").textContent = seconds ? B.fixed(sum(minute, "generation_tokens") / seconds, 1) : "—";
    const decoding = sum(minute, "decode_seconds");
    document.getElementById("kpi-speedup").textContent = "speedup over target-only: " +
      (decoding ? `${B.fixed(sum(minute, "target_only_seconds") / decoding, 2)}× (workers' measured step costs)` : "—");
    const weighted = minute.filter((b) => b.mean_acceptance_length !== null);
    const requests = sum(weighted, "requests");
    document.getElementById("kpi-acceptance").textContent = requests
      ? B.fixed(weighted.reduce((n, b) => n + b.mean_acceptance_length * b.requests, 0) / requests, 2) : "—";
    const accepted = sum(minute, "accepted");
    document.getElementById("kpi-draft-share").textContent = "tokens per target step; draft share of accepted tokens: " +
      (accepted ? `${B.fixed(100 * sum(minute, "accepted_from_draft") / accepted, 0)}% ` +
        `(n-gram ${B.fixed(100 * sum(minute, "accepted_from_ngram") / accepted, 0)}%; a token both proposed counts for both)`
        : "—");
    const five = recent(buckets, 300);
    document.getElementById("kpi-requests").textContent = `${sum(five, "requests")} / ${sum(five, "errors")}`;
  }

  function figures(series, audit) {
    const buckets = series.buckets;
    const x = buckets.map((b) => B.plotTime(new Date(b.start * 1000)));
    const from = new Date((series.now - MINUTES * 60) * 1000);
    const markers = B.swapMarkers(audit, buckets.length ? new Date(buckets[0].start * 1000) : from);
    B.plot("fig-throughput", "Generated tokens/s and speedup over target-only", [
      { x, y: buckets.map((b) => b.tokens_per_s), type: "scatter", mode: "lines", name: "tokens/s",
        line: { color: "#1f5fbf" }, fill: "tozeroy" },
      { x, y: buckets.map((b) => b.speedup_over_target_only), type: "scatter", mode: "lines+markers",
        name: "speedup (right axis)", yaxis: "y2", line: { color: "#c2410c" }, connectgaps: false },
    ], { shapes: markers.shapes, legend: { orientation: "h", y: -0.2 },
      yaxis2: { overlaying: "y", side: "right", rangemode: "tozero", title: { text: "×" } } }, "no traffic yet");
    const versions = [...new Set(buckets.flatMap((b) => Object.keys(b.by_version)))].sort();
    const traces = [{ x, y: buckets.map((b) => b.mean_acceptance_length), type: "scatter", mode: "lines+markers",
      name: "all versions", line: { color: "#14213d", width: 2.5 }, connectgaps: false }];
    for (const version of versions.filter((v) => v !== "none")) {
      traces.push({ x, y: buckets.map((b) => (b.by_version[version] || {}).mean_acceptance_length ?? null),
        type: "scatter", mode: "markers", name: version, marker: { size: 6 } });
    }
    const hasAcceptance = buckets.some((b) => b.mean_acceptance_length !== null);
    B.plot("fig-acceptance", "Mean acceptance length (tokens per target step), swaps marked",
      hasAcceptance ? traces : [], { shapes: markers.shapes, annotations: markers.annotations },
      buckets.length ? "no speculative requests yet (no draft live)" : "no traffic yet");
    document.getElementById("fig-acceptance").dataset.swaps = String(markers.count);
    B.plot("fig-requests", "Requests and errors per bucket", [
      { x, y: buckets.map((b) => b.requests), type: "bar", name: "requests", marker: { color: "#1f5fbf" } },
      { x, y: buckets.map((b) => b.errors), type: "bar", name: "errors", marker: { color: "#b3261e" } },
    ], { barmode: "stack" }, "no traffic yet");
  }

  function learning(state) {
    const value = document.getElementById("kpi-learning");
    value.textContent = state.paused ? "paused" : "learning";
    value.className = `value ${state.paused ? "warn" : "ok"}`;
    document.getElementById("kpi-learning-note").textContent =
      state.updated_by ? `by ${state.updated_by}${state.reason ? `: ${state.reason}` : ""}` : "";
  }

  function traceBus(bus) {
    const value = document.getElementById("kpi-bus");
    const note = document.getElementById("kpi-bus-note");
    if (bus === null) {
      value.textContent = "not reported";
      value.className = "value muted";
      note.textContent = "this control plane has no trace-bus endpoint";
      return;
    }
    const depth = bus.stream_length === null ? "Redis unreachable" : bus.stream_length;
    value.textContent = `${depth} / ${bus.dead_letter_length ?? "—"}`;
    value.className = "value";
    note.textContent = `exported ${bus.exported}, dropped by workers ${bus.dropped}`;
  }

  function workers(rows, ready) {
    document.getElementById("kpi-desired").textContent = ready.desired_draft_version || "none";
    const state = !ready.ready ? "not ready" : ready.converged ? "ready, every worker on it" : "ready, workers converging";
    document.getElementById("kpi-ready").textContent = state;
    document.getElementById("kpi-ready").className = `note ${!ready.ready ? "bad" : ready.converged ? "ok" : "warn"}`;
    B.fill("workers", rows.length ? rows.map((w) => B.el("tr", {},
      B.el("td", {}, w.id), B.el("td", {}, w.draft_version || "none (no draft)"),
      B.el("td", { class: w.healthy ? "ok" : "bad" }, w.healthy ? "healthy" : "stale"),
      B.el("td", { class: "num" }, w.active_requests), B.el("td", {}, B.when(w.last_heartbeat_at)),
    )) : [B.el("tr", {}, B.el("td", { colspan: 5, class: "muted" }, "no inference worker registered"))]);
  }

  /** Audit entries of the actions that change the live draft (the swap markers). */
  async function swapEntries() {
    const lists = await Promise.all(B.SWAP_ACTIONS.map((action) => B.api.get(`/api/audit?limit=100&action=${action}`)));
    return lists.flat();
  }

  async function readiness() {
    const response = await fetch("/ready", { credentials: "same-origin" });
    return response.json();
  }

  async function refresh() {
    const [series, swaps, state, bus, rows, ready] = await Promise.all([
      B.api.get(`/api/stats/serving?minutes=${MINUTES}`), swapEntries(),
      B.api.get("/api/learning"), B.api.optional("/api/tracebus"), B.api.get("/api/workers"), readiness(),
    ]);
    kpis(series.buckets);
    figures(series, swaps);
    learning(state);
    traceBus(bus);
    workers(rows, ready);
  }

  B.start(refresh, 3000);
})();
