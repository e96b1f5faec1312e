"""docs/architecture.md stays current: every module of the product has its line."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_is_described() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    modules = [
        path.relative_to(ROOT).as_posix()
        for package in ("appliance", "borealis", "backend", "dashboard", "worker", "migrations")
        for path in (ROOT / package).rglob("*.py")
        if path.name != "__init__.py"
    ]
    missing = [module for module in modules if f"`{module}`" not in text]
    assert modules and not missing, missing
