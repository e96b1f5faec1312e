"use strict";
// Shared by every page: the session and its CSRF token, API calls, polling, figures, confirmation.
const Borealis = (() => {
  let csrfToken = null;
  const status = () => document.getElementById("status");

  function toSignIn() {
    location.assign(`/dashboard/login?next=${encodeURIComponent(location.pathname)}`);
    throw new Error("not signed in");
  }

  async function session() {
    const response = await fetch("/api/session", { credentials: "same-origin" });
    if (response.status === 401) toSignIn();
    const body = await response.json();
    csrfToken = body.csrf_token;
    document.getElementById("who").textContent = `${body.actor} · until ${clock(new Date(body.expires_at))}`;
    return body;
  }

  async function request(method, path, body, allowMissing) {
    const headers = { accept: "application/json" };
    if (method !== "GET") headers["x-csrf-token"] = csrfToken;
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) toSignIn();
    if (allowMissing && response.status === 404) return null;
    if (response.status === 204) return null;
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error((data.error && data.error.message) || `${method} ${path}: ${response.status}`);
    }
    return data;
  }

  const api = {
    get: (path) => request("GET", path),
    /** null when the endpoint does not exist (yet): the page says "not reported". */
    optional: (path) => request("GET", path, undefined, true),
    post: (path, body) => request("POST", path, body),
    put: (path, body) => request("PUT", path, body),
  };

  function pad(n) { return String(n).padStart(2, "0"); }
  function clock(date) { return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`; }
  /** Local time in the form Plotly reads as a date without shifting time zones. */
  function plotTime(date) {
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${clock(date)}`;
  }
  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(d)}`;
  }
  function fixed(value, digits) { return value === null || value === undefined ? "—" : Number(value).toFixed(digits); }

  /** el("td", {class: "num"}, "text", childNode) */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value);
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  /** Replace a container's rows; a focused control with a data-key keeps focus (keyboard users). */
  function fill(id, rows) {
    const container = document.getElementById(id);
    const active = document.activeElement;
    const key = active && container.contains(active) ? active.dataset.key : undefined;
    container.replaceChildren(...rows);
    if (key) {
      const again = [...container.querySelectorAll("[data-key]")].find((node) => node.dataset.key === key);
      if (again) again.focus();
    }
  }
  function badge(status) { return el("span", { class: `badge ${status}` }, status.replace("_", " ")); }

  const baseLayout = {
    margin: { l: 48, r: 12, t: 30, b: 36 },
    font: { family: "system-ui, sans-serif", size: 12, color: "#1d2330" },
    paper_bgcolor: "#fff", plot_bgcolor: "#fff",
    legend: { orientation: "h", y: -0.18 },
    xaxis: { type: "date", gridcolor: "#eef0f4" },
    yaxis: { gridcolor: "#eef0f4", rangemode: "tozero" },
  };
  const config = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

  /** Draw or update a figure in place; an empty figure shows why it is empty, never made-up data. */
  function plot(id, title, traces, layout, emptyText) {
    const hasData = traces.some((t) => (t.x || t.y || []).length > 0);
    const merged = { ...baseLayout, title: { text: title, font: { size: 14 }, x: 0.01 }, ...layout };
    merged.xaxis = { ...baseLayout.xaxis, ...(layout && layout.xaxis) };
    merged.yaxis = { ...baseLayout.yaxis, ...(layout && layout.yaxis) };
    if (!hasData) {
      merged.annotations = [{ text: emptyText || "no data yet", showarrow: false, xref: "paper", yref: "paper",
        x: 0.5, y: 0.5, font: { size: 14, color: "#5b6475" } }];
      merged.shapes = [];
      merged.xaxis.visible = false;
      merged.yaxis.visible = false;
      if (merged.yaxis2) merged.yaxis2 = { ...merged.yaxis2, visible: false };
    }
    const node = document.getElementById(id);
    node.setAttribute("role", "img");
    node.setAttribute("aria-label", hasData ? title : `${title}: ${emptyText || "no data yet"}`);
    node.dataset.points = String(traces.reduce((n, t) => n + (t.y || t.x || []).length, 0));
    return Plotly.react(node, traces, merged, config);
  }

  /** Vertical markers with version labels at swaps (promotions, approvals, rollbacks) in the range. */
  const SWAP_ACTIONS = { "draft.promote": "promote", "draft.approve": "approve",
    "draft.rollback": "rollback", "draft.auto_rollback": "auto-rollback" };
  function swapMarkers(audit, from) {
    const swaps = audit.filter((e) => e.action in SWAP_ACTIONS && new Date(e.at) >= from)
      .sort((a, b) => new Date(a.at) - new Date(b.at));
    // An approval is followed at once by its promotion: one marker, labelled "approve".
    const kept = swaps.filter((e) => !(e.action === "draft.promote" && swaps.some((a) =>
      a.action === "draft.approve" && a.target === e.target && Math.abs(new Date(a.at) - new Date(e.at)) < 5000)));
    return {
      shapes: kept.map((e) => ({ type: "line", xref: "x", yref: "paper", x0: plotTime(new Date(e.at)),
        x1: plotTime(new Date(e.at)), y0: 0, y1: 1,
        line: { color: e.action.includes("rollback") ? "#b3261e" : "#16794c", width: 1.5, dash: "dot" } })),
      annotations: kept.map((e, i) => ({ xref: "x", yref: "paper", x: plotTime(new Date(e.at)), y: 1 - (i % 3) * 0.1,
        text: `${e.target} ${SWAP_ACTIONS[e.action]}`, showarrow: false, xanchor: "left", font: { size: 11 },
        bgcolor: "rgba(255,255,255,.85)" })),
      count: kept.length,
    };
  }

  /** Ask for confirmation and a reason; resolves to the reason, or null when cancelled. */
  function confirmAction(title, text, confirmLabel, danger) {
    const dialog = document.getElementById("confirm");
    const reason = document.getElementById("confirm-reason");
    const ok = document.getElementById("confirm-ok");
    document.getElementById("confirm-title").textContent = title;
    document.getElementById("confirm-text").textContent = text;
    ok.textContent = confirmLabel;
    ok.className = danger ? "danger" : "";
    reason.value = "";
    return new Promise((resolve) => {
      const form = document.getElementById("confirm-form");
      const cancel = document.getElementById("confirm-cancel");
      const done = (value) => {
        form.removeEventListener("submit", onSubmit);
        cancel.removeEventListener("click", onCancel);
        dialog.removeEventListener("cancel", onCancel);
        dialog.close();
        resolve(value);
      };
      const onSubmit = (event) => { event.preventDefault(); done(reason.value.trim()); };
      const onCancel = (event) => { event.preventDefault(); done(null); };
      form.addEventListener("submit", onSubmit);
      cancel.addEventListener("click", onCancel);
      dialog.addEventListener("cancel", onCancel);
      dialog.showModal();
      reason.focus();
    });
  }

  /** Run an operator action after confirmation; reports the outcome in the status line. */
  async function act(title, text, confirmLabel, perform, danger) {
    say("");
    const reason = await confirmAction(title, text, confirmLabel, danger);
    if (reason === null) return false;
    try {
      await perform(reason);
      say(`${title}: done`, "ok");
      return true;
    } catch (error) {
      say(`${title}: ${error.message}`, "bad");
      return false;
    }
  }

  function say(text, kind) {
    status().textContent = text;
    status().className = kind || "muted";
  }

  /** Refresh the page's data now and every few seconds, without reloading the page. */
  function live(refresh, everyMs) {
    const updated = document.getElementById("updated");
    let timer = null;
    return async function run() {
      clearTimeout(timer);
      try {
        await refresh();
        updated.textContent = `updated ${clock(new Date())}`;
        updated.className = "muted small";
      } catch (error) {
        updated.textContent = `refresh failed: ${error.message}`;
        updated.className = "bad small";
      }
      timer = setTimeout(run, everyMs || 3000);
    };
  }

  async function start(refresh, everyMs) {
    await session();
    document.getElementById("sign-out").addEventListener("click", async () => {
      await request("DELETE", "/api/session");
      location.assign("/dashboard/login");
    });
    const run = live(refresh, everyMs);
    await run();
    return run;
  }

  /** Over all held-out traces: the trainer's "all" entry when reported, else domains weighted by traces. */
  return { api, el, fill, badge, plot, plotTime, when, clock, fixed, swapMarkers, act, say, start,
    SWAP_ACTIONS: Object.keys(SWAP_ACTIONS) };
})();
