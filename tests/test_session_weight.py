"""A training worker's session at the lowest CPU weight where the kernel shares CPU between sessions."""

from __future__ import annotations

import subprocess
import sys

import pytest

from borealis.processes import OWN_AUTOGROUP, session_nice

pytestmark = pytest.mark.skipif(not OWN_AUTOGROUP.exists(), reason="no autogroups here")

CHILD = "from borealis.processes import idle_session_weight as w, session_nice as n; print(w(), n())"


def run_child(new_session: bool) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], start_new_session=new_session, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_a_session_leader_lowers_its_session_and_leaves_others_alone() -> None:
    assert run_child(new_session=True) == ["True", "19"]
    ours = session_nice()
    assert run_child(new_session=False) == ["False", str(ours)]  # a member of our session: left alone
    assert session_nice() == ours
