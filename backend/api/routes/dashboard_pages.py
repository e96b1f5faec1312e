"""Serves the operator dashboard: pages behind the dashboard session, scripts, and plotly.js.

Pages are static HTML filled in by their scripts from the operator JSON API, so every number the
dashboard shows is one the API also serves. plotly.js comes from the installed plotly package (no
CDN: the appliance may be offline). A strict Content-Security-Policy allows only same-origin scripts.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from backend.api.deps import DashboardSessionsDep, SessionDep, signed_in

router = APIRouter(include_in_schema=False)

TEMPLATES = Path(str(files("dashboard") / "templates"))  # the UI itself lives in dashboard/
PAGES = {
    "overview": "Overview",
    "drift": "Drift",
    "drafts": "Drafts",
    "learning": "Learning",
    "audit": "Audit log",
    "workers": "Workers",
}
ASSETS = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"} | {
    f"{page}.js": "text/javascript" for page in [*PAGES, "login"]
}
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
NEXT_PATTERN = re.compile(r"^/dashboard(/[a-z]+)?$")


def plotly_js_path() -> Path:
    return Path(str(files("plotly") / "package_data" / "plotly.min.js"))


@cache
def _template(name: str) -> str:
    return (TEMPLATES / name).read_text()


def _page(page: str) -> str:
    nav = "\n".join(
        f'<a href="/dashboard{"" if key == "overview" else "/" + key}"'
        f"{' aria-current=page' if key == page else ''}>{title}</a>"
        for key, title in PAGES.items()
    )
    return (
        _template("layout.html")
        .replace("{{title}}", PAGES[page])
        .replace("{{page}}", page)
        .replace("{{nav}}", nav)
        .replace("{{content}}", _template(f"{page}.html"))
    )


def _signed_in(request: Request, session: SessionDep, sessions: DashboardSessionsDep) -> bool:
    return signed_in(request, session, sessions) is not None


SignedInDep = Annotated[bool, Depends(_signed_in)]


def _html(body: str) -> HTMLResponse:
    return HTMLResponse(body, headers=SECURITY_HEADERS)


def _render(request: Request, page: str, ok: bool) -> Response:
    if not ok:
        return RedirectResponse(f"/dashboard/login?next={request.url.path}", status_code=303)
    return _html(_page(page))


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/dashboard")


@router.get("/dashboard/login")
def login(
    ok: SignedInDep, next_: Annotated[str, Query(alias="next", max_length=64)] = "/dashboard"
) -> Response:
    target = next_ if NEXT_PATTERN.match(next_) else "/dashboard"
    if ok:
        return RedirectResponse(target, status_code=303)
    return _html(_template("login.html"))


@router.get("/dashboard")
def overview(request: Request, ok: SignedInDep) -> Response:
    return _render(request, "overview", ok)


@router.get("/dashboard/static/plotly.min.js")
def plotly_js() -> FileResponse:
    return FileResponse(plotly_js_path(), media_type="text/javascript")


@router.get("/dashboard/static/{name}")
def asset(name: str) -> Response:
    if name not in ASSETS:
        return Response(status_code=404)
    return Response(_template(name), media_type=ASSETS[name], headers={"cache-control": "no-cache"})


@router.get("/dashboard/{page}")
def page(page: str, request: Request, ok: SignedInDep) -> Response:
    if page not in PAGES or page == "overview":
        return Response(status_code=404)
    return _render(request, page, ok)
