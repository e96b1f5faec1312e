"use strict";
// Audit log: who did what, when and why, newest first, filterable by action.
(() => {
  const B = Borealis;
  const filter = document.getElementById("action-filter");
  const seen = new Set();
  let run = null;

  function options(entries) {
    for (const action of entries.map((e) => e.action).sort()) {
      if (seen.has(action)) continue;
      seen.add(action);
      filter.append(B.el("option", { value: action }, action));
    }
  }

  async function refresh() {
    const action = filter.value;
    const entries = await B.api.get(`/api/audit?limit=300${action ? `&action=${encodeURIComponent(action)}` : ""}`);
    if (!action) options(entries);
    document.getElementById("audit-count").textContent = `${entries.length} newest entries`;
    B.fill("audit", entries.map((e) => B.el("tr", {},
      B.el("td", { class: "when" }, B.when(e.at)), B.el("td", {}, e.actor), B.el("td", {}, e.action), B.el("td", {}, e.target),
      B.el("td", {}, e.reason), B.el("td", { class: "details" }, Object.keys(e.details).length ? JSON.stringify(e.details) : ""))));
  }

  filter.addEventListener("change", () => run && run());
  B.start(refresh, 5000).then((r) => { run = r; });
})();
