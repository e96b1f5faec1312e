"use strict";
// Drift: acceptance per domain, domain mix over time, divergence against its threshold with shifts marked.
(() => {
  const B = Borealis;
  const PALETTE = ["#1f5fbf", "#e07b00", "#16794c", "#b3261e", "#7b3fb5", "#008b8b", "#8a5a00", "#5b6475"];

  function byDomain(series) {
    const buckets = series.buckets;
    const x = buckets.map((b) => B.plotTime(new Date(b.start * 1000)));
    const domains = [...new Set(buckets.flatMap((b) => Object.keys(b.by_domain)))].sort();
    const color = (i) => PALETTE[i % PALETTE.length];
    const acceptance = domains.map((d, i) => ({ x, y: buckets.map((b) => (b.by_domain[d] || {}).mean_acceptance_length ?? null),
      type: "scatter", mode: "lines+markers", name: d, line: { color: color(i) }, connectgaps: true }))
      .filter((t) => t.y.some((v) => v !== null));
    B.plot("fig-domain-acceptance", "Acceptance length per domain", acceptance, {},
      buckets.length ? "no speculative requests yet" : "no traffic yet");
    const mix = domains.map((d, i) => ({ x, y: buckets.map((b) => (b.by_domain[d] || {}).requests || 0),
      type: "scatter", mode: "lines", stackgroup: "mix", groupnorm: "percent", name: d, line: { color: color(i) } }));
    B.plot("fig-domain-mix", "Domain mix (% of requests)", buckets.some((b) => b.requests) ? mix : [],
      { yaxis: { ticksuffix: "%", range: [0, 100] } }, "no traffic yet");
  }

  function divergence(drift) {
    const missing = document.getElementById("drift-missing");
    const windows = drift === null ? [] : (Array.isArray(drift) ? drift : drift.windows || []);
    const scored = windows.filter((w) => w.divergence !== null && w.divergence !== undefined);
    missing.hidden = scored.length > 0;
    document.getElementById("fig-divergence").hidden = scored.length === 0;
    if (!scored.length) return;
    const x = scored.map((w) => B.plotTime(new Date(w.ended_at * 1000)));
    const threshold = drift.js_threshold ?? drift.threshold;
    const traces = [{ x, y: scored.map((w) => w.divergence), type: "scatter", mode: "lines+markers",
      name: "token divergence (JS, bits)", line: { color: "#1f5fbf" } }];
    if (scored.some((w) => w.mix_shift !== null && w.mix_shift !== undefined)) {
      traces.push({ x, y: scored.map((w) => w.mix_shift ?? null), type: "scatter", mode: "lines+markers",
        name: "domain-mix shift (TV)", line: { color: "#e07b00" } });
    }
    if (threshold !== undefined) {
      // A window shifts when its divergence clears the traffic's own noise floor by the threshold.
      traces.push({ x, y: scored.map((w) => (w.divergence_floor ?? 0) + threshold), type: "scatter", mode: "lines",
        name: "shift line (noise floor + threshold)", line: { color: "#b3261e", dash: "dash" } });
    }
    const shifts = scored.filter((w) => w.shift);
    traces.push({ x: shifts.map((w) => B.plotTime(new Date(w.ended_at * 1000))), y: shifts.map((w) => w.divergence),
      type: "scatter", mode: "markers", name: "shift detected", marker: { symbol: "x", size: 12, color: "#b3261e" } });
    B.plot("fig-divergence",
      `Divergence of recent vs reference traffic${threshold === undefined ? "" : ` (shift: ${threshold} above the noise floor)`}`,
      traces, {});
  }

  async function refresh() {
    const [series, drift] = await Promise.all([B.api.get("/api/stats/serving?minutes=30"), B.api.optional("/api/drift")]);
    byDomain(series);
    divergence(drift);
  }

  B.start(refresh, 4000);
})();
