"use strict";
// Workers: every registered inference worker, its live draft version and health.
(() => {
  const B = Borealis;

  async function refresh() {
    const [rows, ready] = await Promise.all([
      B.api.get("/api/workers"), fetch("/ready", { credentials: "same-origin" }).then((r) => r.json()),
    ]);
    const label = document.getElementById("ready");
    label.textContent = ready.ready ? "ready" : "not ready";
    label.className = ready.ready ? "ok" : "bad";
    document.getElementById("desired").textContent =
      `desired draft version: ${ready.desired_draft_version || "none"}; on it: ${ready.workers_on_desired.join(", ") || "no worker"}`;
    B.fill("workers", rows.length ? rows.map((w) => B.el("tr", { "data-worker": w.id },
      B.el("td", {}, w.id), B.el("td", {}, w.url), B.el("td", {}, w.model),
      B.el("td", { class: w.fallback_reason ? "warn engine" : "engine", title: w.fallback_reason },
        w.engine === "spec" ? "speculative" : w.fallback_reason ? "reference (fallback, no speculation)" : "reference"),
      B.el("td", { class: "version" }, w.draft_version || "none"),
      B.el("td", { class: w.healthy ? "ok" : "bad" }, w.healthy ? "healthy" : "stale"),
      B.el("td", { class: "num" }, w.active_requests), B.el("td", {}, B.when(w.last_heartbeat_at)))) :
      [B.el("tr", {}, B.el("td", { colspan: 8, class: "muted" }, "no inference worker registered"))]);
  }

  B.start(refresh, 2000);
})();
