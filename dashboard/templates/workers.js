"use strict";
// Workers: every registered inference worker, its live draft version and health; every trainer's last round.
(() => {
  const B = Borealis;

  async function refresh() {
    const [rows, ready, trainers] = await Promise.all([
      B.api.get("/api/workers"), fetch("/ready", { credentials: "same-origin" }).then((r) => r.json()),
      B.api.get("/api/trainers"),
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
    B.fill("trainers", trainers.length ? trainers.map(({ progress: p, reported_at: at }) => B.el("tr", { "data-trainer": p.trainer },
      B.el("td", {}, p.trainer), B.el("td", {}, p.status), B.el("td", { class: "num" }, p.round),
      B.el("td", { class: "num steps" }, p.optimizer_steps),
      B.el("td", { class: "num" }, `${p.trained_records} / ${p.heldout_records}`),
      B.el("td", {}, p.last_candidate || "none"), B.el("td", { class: "num" }, p.cpu_seconds.toFixed(0)),
      B.el("td", { class: "num" }, (p.rss_bytes / 1048576).toFixed(0)), B.el("td", {}, B.when(at)))) :
      [B.el("tr", {}, B.el("td", { colspan: 9, class: "muted" }, "no trainer has reported a round yet"))]);
  }

  B.start(refresh, 2000);
})();
