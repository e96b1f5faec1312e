"""Serves the operator dashboard pages and plotly.js from the installed plotly package (no CDN)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

router = APIRouter(include_in_schema=False)

TEMPLATES = Path(__file__).parent / "templates"


def plotly_js_path() -> Path:
    return Path(str(files("plotly") / "package_data" / "plotly.min.js"))


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/dashboard")


@router.get("/dashboard")
def overview() -> HTMLResponse:
    return HTMLResponse((TEMPLATES / "overview.html").read_text())


@router.get("/dashboard/static/plotly.min.js")
def plotly_js() -> FileResponse:
    return FileResponse(plotly_js_path(), media_type="text/javascript")
