"""Settings come from BOREALIS_* variables with working single-machine defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from borealis.settings import Settings


def test_defaults_need_no_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BOREALIS_HOME", str(tmp_path))
    settings = Settings()
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'borealis.db'}"
    assert settings.redis_url == ""  # embedded Redis
    assert settings.resolved_model_path == tmp_path / "models" / "smollm2-135m-instruct"
    assert settings.resolved_artifact_dir == tmp_path / "artifacts"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOREALIS_DATABASE_URL", "postgresql+psycopg://db/borealis")
    monkeypatch.setenv("BOREALIS_API_PORT", "9001")
    monkeypatch.setenv("BOREALIS_MODEL_PATH", "/models/llama")
    settings = Settings()
    assert settings.resolved_database_url == "postgresql+psycopg://db/borealis"
    assert settings.resolved_control_plane_url == "http://127.0.0.1:9001"
    assert settings.resolved_model_path == Path("/models/llama")


def test_a_trainer_beside_serving_gets_its_own_cadence(monkeypatch: pytest.MonkeyPatch) -> None:
    """`borealis up`'s co-located trainer settings are real settings: a candidate every 20 steps,
    judged on at most 24 traces, on one thread, yielding the CPU rather than resting (200 steps for a
    trainer of its own)."""
    from borealis.processes import COLOCATED_TRAINER_ENV

    for name, value in COLOCATED_TRAINER_ENV.items():
        monkeypatch.setenv(name, value)
    trainer = Settings().trainer
    assert trainer.steps_per_round * trainer.candidate_every_rounds == 20
    assert (trainer.judge_max_traces, trainer.duty_cycle) == (24, 1.0)
    assert Settings().trainer_sched_idle  # what lets it compute whenever serving leaves a core idle
    assert Settings().resolved_trainer_threads == 1  # no second thread pool beside serving's
    fields = Settings.model_fields
    assert fields["trainer_steps_per_round"].default * fields["trainer_candidate_every_rounds"].default == 200


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOREALIS_API_PORT", "99999")
    with pytest.raises(ValidationError):
        Settings()


def test_the_trainer_runs_on_cuda_only_where_asked_or_present() -> None:
    import torch

    here = Settings().trainer
    assert here.device == ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = Settings(trainer_device="cuda").trainer
    assert on_gpu.device == "cuda" and on_gpu.bf16  # bf16 autocast is native on CUDA
    assert not Settings(trainer_device="cuda", trainer_bf16="false").trainer.bf16
    assert Settings(trainer_device="cpu").trainer.device == "cpu"
