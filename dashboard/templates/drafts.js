"use strict";
// Drafts: every version with status, lineage, shadow vs live evaluation; approve, reject, promote, roll back.
(() => {
  const B = Borealis;
  let selected = null;
  let run = null;

  function lineage(draft, byId) {
    const chain = [];
    let parent = draft.parent_id;
    while (parent && chain.length < 8) {
      chain.push(parent);
      parent = byId[parent] ? byId[parent].parent_id : null;
    }
    return chain.length ? `← ${chain.join(" ← ")}${parent ? " ← …" : ""}` : "root";
  }

  const ACTIONS = [
    { verb: "approve", label: "Approve", when: (d) => d.status === "pending_approval",
      text: (d) => `Approve ${d.id}: it becomes live and every inference worker swaps to it.` },
    { verb: "promote", label: "Promote", when: (d) => d.status === "candidate",
      text: (d) => `Promote ${d.id} regardless of the approval policy; every worker swaps to it.` },
    { verb: "reject", label: "Reject", danger: true, when: (d) => ["candidate", "pending_approval"].includes(d.status),
      text: (d) => `Reject ${d.id}: it will never be served.` },
    { verb: "rollback", label: "Roll back to", danger: true,
      when: (d) => ["retired", "rolled_back"].includes(d.status) && d.promoted_at,
      text: (d) => `Make ${d.id} live again; the current live version is marked rolled back.` },
  ];

  function buttons(draft) {
    return ACTIONS.filter((a) => a.when(draft)).map((a) => B.el("button", {
      type: "button", class: a.danger ? "danger" : "", "data-action": a.verb, "data-version": draft.id,
      "data-key": `${a.verb}:${draft.id}`,
      onclick: async () => {
        const done = await B.act(`${a.label} ${draft.id}`, a.text(draft), a.label, (reason) =>
          B.api.post(`/api/drafts/${draft.id}/${a.verb}`, { reason }), a.danger);
        if (done) run();
      },
    }, a.label));
  }

  function row(draft, byId) {
    const live = draft.live_eval || {};
    return B.el("tr", { "data-version": draft.id },
      B.el("td", {}, B.el("button", { type: "button", class: "secondary", "aria-pressed": String(draft.id === selected),
        "data-key": `select:${draft.id}`,
        onclick: () => { selected = draft.id; run(); } }, draft.id)),
      B.el("td", {}, B.badge(draft.status)),
      B.el("td", { class: "small" }, lineage(draft, byId)),
      B.el("td", { class: "num" }, `${B.fixed(draft.shadow_candidate, 2)} / ${B.fixed(draft.shadow_live, 2)}`),
      B.el("td", { class: "num" }, live.mean_acceptance_length === undefined ? "—"
        : `${B.fixed(live.mean_acceptance_length, 2)} (${live.requests})`),
      B.el("td", { class: "num" }, draft.request_to_live_seconds === null ? "—"
        : `${B.fixed(draft.request_to_live_seconds / 60, 1)} min`),
      B.el("td", {}, buttons(draft)));
  }

  function detail(draft) {
    document.getElementById("detail-title").textContent = draft ? `Version ${draft.id}` : "Version detail";
    if (!draft) {
      B.plot("fig-eval", "Shadow evaluation vs live, per domain", [], {}, "no draft versions yet");
      B.fill("detail", []);
      return;
    }
    const shadow = draft.shadow_eval || {};
    const liveDomains = (draft.live_eval || {}).domains || {};
    const domains = [...new Set([...Object.keys(shadow), ...Object.keys(liveDomains)])].sort();
    const bar = (name, color, value) => ({ type: "bar", name, marker: { color }, x: domains,
      y: domains.map(value) });
    const traces = [
      bar("shadow: this version", "#1f5fbf", (d) => (shadow[d] || {}).candidate ?? null),
      bar("shadow: live at evaluation", "#9aa5b8", (d) => (shadow[d] || {}).live ?? null),
      bar("live after promotion", "#16794c", (d) => (liveDomains[d] || {}).mean_acceptance_length ?? null),
    ].filter((t) => t.y.some((v) => v !== null));
    B.plot("fig-eval", "Acceptance length per domain: shadow evaluation vs live", traces,
      { barmode: "group", xaxis: { type: "category" } }, "no shadow or live evaluation reported for this version");
    const facts = [
      ["Status", draft.status], ["Parent", draft.parent_id || "none"], ["Source", draft.source],
      ["Created", B.when(draft.created_at)], ["Promoted", B.when(draft.promoted_at) || "never"],
      ["Artifact", `${draft.artifact_sha256.slice(0, 16)}… (${(draft.artifact_bytes / 1e6).toFixed(2)} MB)`],
      ["Data window", JSON.stringify(draft.data_window)], ["Training", JSON.stringify(draft.training_metrics)],
    ];
    B.fill("detail", facts.map(([k, v]) => B.el("tr", {}, B.el("th", { scope: "row" }, k), B.el("td", {}, v))));
  }

  async function refresh() {
    const drafts = await B.api.get("/api/drafts");
    const byId = Object.fromEntries(drafts.map((d) => [d.id, d]));
    if (!byId[selected]) {
      const preferred = drafts.find((d) => d.status === "pending_approval") || drafts.find((d) => d.status === "live");
      selected = (preferred || drafts[0] || {}).id || null;
    }
    B.fill("drafts", drafts.length ? drafts.map((d) => row(d, byId))
      : [B.el("tr", {}, B.el("td", { colspan: 7, class: "muted" }, "no draft versions yet"))]);
    detail(byId[selected]);
  }

  B.start(refresh, 4000).then((r) => { run = r; });
})();
