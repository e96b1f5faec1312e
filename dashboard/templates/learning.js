"use strict";
// Learning: pause/resume, approval policy, training loss and simulated acceptance per round, replay mix.
(() => {
  const B = Borealis;
  let learning = null;
  let policyShown = null;
  let run = null;

  // The trainer's candidate metrics: mean loss of the rounds since the previous candidate, replay mix.
  const lossOf = (metrics) => (typeof metrics.loss === "number" ? metrics.loss : null);
  const replayOf = (metrics) => (metrics.replay_domains && typeof metrics.replay_domains === "object" ? metrics.replay_domains : null);

  function rounds(drafts) {
    const ordered = [...drafts].sort((a, b) => (a.id < b.id ? -1 : 1));
    const label = (d) => (d.training_metrics.round !== undefined ? `${d.id} (round ${d.training_metrics.round})` : d.id);
    const withShadow = ordered.filter((d) => d.shadow_candidate !== null);
    B.plot("fig-shadow", "Simulated acceptance length per round (shadow evaluation)", [
      { x: withShadow.map(label), y: withShadow.map((d) => d.shadow_candidate), type: "scatter",
        mode: "lines+markers", name: "candidate", line: { color: "#1f5fbf" } },
      { x: withShadow.map(label), y: withShadow.map((d) => d.shadow_live), type: "scatter",
        mode: "lines+markers", name: "live at evaluation", line: { color: "#9aa5b8", dash: "dot" } },
    ].filter((t) => t.y.some((v) => v !== null)), { xaxis: { type: "category" } }, "no shadow evaluation reported yet");
    const withLoss = ordered.filter((d) => lossOf(d.training_metrics) !== null);
    B.plot("fig-loss", "Training loss per round", [{ x: withLoss.map(label), y: withLoss.map((d) => lossOf(d.training_metrics)),
      type: "scatter", mode: "lines+markers", name: "loss", line: { color: "#e07b00" } }],
      { xaxis: { type: "category" }, showlegend: false }, "no training loss reported yet");
    const latest = [...ordered].reverse().find((d) => replayOf(d.training_metrics));
    const replay = latest ? replayOf(latest.training_metrics) : null;
    B.plot("fig-replay", latest ? `Replay buffer by domain (${latest.id})` : "Replay buffer by domain",
      replay ? [{ type: "bar", x: Object.keys(replay), y: Object.values(replay), marker: { color: "#16794c" } }] : [],
      { xaxis: { type: "category" }, showlegend: false }, "replay buffer composition not reported");
  }

  function showLearning(state) {
    learning = state;
    const label = document.getElementById("learning-state");
    label.textContent = state.paused ? "paused" : "learning";
    label.className = state.paused ? "warn" : "ok";
    document.getElementById("learning-note").textContent =
      state.updated_by ? `last changed by ${state.updated_by}${state.reason ? `: “${state.reason}”` : ""}` : "";
    const button = document.getElementById("toggle-learning");
    button.textContent = state.paused ? "Resume learning…" : "Pause learning…";
    button.disabled = false;
  }

  function showPolicy(policy) {
    document.getElementById("policy-current").textContent = `current: ${policy.mode}, margin ${policy.margin}`;
    const key = JSON.stringify(policy);
    if (key === policyShown) return;  // keep what the operator is editing until the policy changes
    policyShown = key;
    document.getElementById(`mode-${policy.mode}`).checked = true;
    document.getElementById("margin").value = policy.margin;
  }

  document.getElementById("toggle-learning").addEventListener("click", async () => {
    const pause = !learning.paused;
    const done = await B.act(pause ? "Pause learning" : "Resume learning",
      pause ? "Training rounds stop; traces keep flowing into the bounded stream." : "Training rounds start again.",
      pause ? "Pause" : "Resume", (reason) => B.api.post(`/api/learning/${pause ? "pause" : "resume"}`, { reason }));
    if (done) run();
  });

  document.getElementById("policy-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const mode = document.querySelector("input[name=mode]:checked").value;
    const margin = Number(document.getElementById("margin").value);
    const done = await B.act("Set approval policy", `Mode ${mode}, margin ${margin}.`, "Save",
      (reason) => B.api.put("/api/policy", { mode, margin, reason }));
    if (done) { policyShown = null; run(); }
  });

  async function refresh() {
    const [state, policy, drafts] = await Promise.all([
      B.api.get("/api/learning"), B.api.get("/api/policy"), B.api.get("/api/drafts"),
    ]);
    showLearning(state);
    showPolicy(policy);
    rounds(drafts);
  }

  B.start(refresh, 4000).then((r) => { run = r; });
})();
