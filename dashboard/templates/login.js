"use strict";
// Sign-in: the server sets an HttpOnly session cookie; then go where the operator was headed.
document.getElementById("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("error");
  error.textContent = "";
  const response = await fetch("/api/session", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token: document.getElementById("token").value }),
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    error.textContent = (body.error && body.error.message) || `sign-in failed (${response.status})`;
    document.getElementById("token").select();
    return;
  }
  const next = new URLSearchParams(location.search).get("next") || "";
  location.assign(/^\/dashboard(\/[a-z]+)?$/.test(next) ? next : "/dashboard");
});
