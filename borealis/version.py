"""The installed Borealis version, for ``/version`` and ``borealis --version``."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    try:
        return version("borealis")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"
