"""`borealis bench peer --dtypes`: which Borealis arms each dtype gets, and which reference each one has."""

from __future__ import annotations

import pytest

from worker.bench.peer import borealis_modes, own_target_only, parse_args


def test_each_dtype_gets_target_only_and_speculative_arms_under_its_own_name() -> None:
    modes = borealis_modes(["float32", "bfloat16"])
    assert list(modes) == ["target-only", "speculative", "target-only:bfloat16", "speculative:bfloat16"]
    assert modes["speculative:bfloat16"]["BOREALIS_DTYPE"] == "bfloat16"
    assert modes["speculative:bfloat16"]["BOREALIS_SPEC_MODE"] == "tree"
    assert modes["target-only"] == {"BOREALIS_SPEC_MODE": "off", "BOREALIS_DTYPE": "float32"}


def test_speculation_is_compared_with_target_only_decoding_of_its_own_dtype() -> None:
    assert own_target_only("speculative") == "target-only"
    assert own_target_only("speculative:bfloat16") == "target-only:bfloat16"
    assert own_target_only("target-only:bfloat16") == "target-only:bfloat16"


def test_an_unknown_dtype_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--dtypes", "float32,int3"])
    assert "--dtypes" in capsys.readouterr().err
    assert parse_args(["--dtypes", "bfloat16,float32"]).dtypes == ["bfloat16", "float32"]
