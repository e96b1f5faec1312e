"""Online rounds on real Redis: train, checkpoint before ack, publish shadow-evaluated candidates, resume."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import torch

from borealis.settings import Settings
from borealis.tracebus import TraceBusConfig
from borealis.wire import DriftReport, TraceRecord, TrainerProgress, UploadResult
from tests.engine.helpers import random_runner
from worker.engine.engine import EngineConfig, SpecConfig, SpecEngine
from worker.engine.llama import LlamaModel
from worker.engine.tracelog import wire_steps
from worker.engine.types import GenerationRequest, SamplingParams
from worker.traces.codec import PAYLOAD_FIELD, encode
from worker.traces.consumer import TraceConsumer
from worker.training.checkpoint import LATEST
from worker.training.online import OnlineTrainer


class FakeControlPlane:
    def __init__(self) -> None:
        self.paused = False
        self.published: list[dict[str, Any]] = []
        self.drift_reports: list[DriftReport] = []
        self.progress: list[TrainerProgress] = []

    def learning_state(self) -> tuple[bool, str | None]:
        return self.paused, None

    def fetch_draft(self, version: str, out_dir: Path) -> None:
        raise AssertionError("no live draft in this test")

    def report_drift(self, report: DriftReport) -> None:
        self.drift_reports.append(report)

    def report_progress(self, progress: TrainerProgress) -> None:
        self.progress.append(progress)

    def publish(
        self, artifact_dir: Path, parent_version: str | None, shadow_eval: Any, metrics: Any, *_: Any
    ) -> UploadResult:
        files = sorted(path.name for path in artifact_dir.iterdir())
        self.published.append(
            {
                "dir": artifact_dir,
                "files": files,
                "parent": parent_version,
                "shadow_eval": shadow_eval,
                "metrics": metrics,
            }
        )
        return UploadResult(version=f"v{len(self.published)}", status="candidate")


@pytest.fixture(scope="module")
def target(tiny_model_dir: Path) -> LlamaModel:
    return LlamaModel.load(tiny_model_dir)


@pytest.fixture(scope="module")
def records(target: LlamaModel) -> list[TraceRecord]:
    """Real traces: the engine speculating with a day-0 draft, its per-step log turned into records."""
    engine = SpecEngine(target, EngineConfig(max_batch=8, max_seq_len=128, spec=SpecConfig(mode="tree")))
    engine.swap_draft(random_runner(target, 256))
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 2000, (12,), generator=generator).tolist() for _ in range(30)]
    for i, prompt in enumerate(prompts):
        engine.submit(GenerationRequest(f"req-{i}", prompt, SamplingParams(max_new_tokens=24)))
    outputs: dict[str, list[int]] = {}
    out = []
    while engine.has_work():
        for event in engine.step():
            outputs.setdefault(event.request_id, []).extend(event.token_ids)
            if event.finish_reason is not None:
                assert event.trace is not None
                out.append(
                    TraceRecord(
                        request_id=event.request_id,
                        model="tiny",
                        domain="code",
                        domain_source="request",
                        started_at=1.0,
                        finished_at=2.0,
                        finish_reason=event.finish_reason,
                        prompt_ids=prompts[int(event.request_id.split("-")[1])],
                        output_ids=outputs[event.request_id],
                        steps=wire_steps(event.trace, len(outputs[event.request_id])),
                    )
                )
    return out


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, key_prefix: str, tiny_model_dir: Path) -> Iterator[Settings]:
    prefix = f"{key_prefix}-online-{uuid.uuid4().hex[:6]}"
    yield Settings(
        home=tmp_path,
        redis_url=redis_url,
        redis_key_prefix=prefix,
        model_path=str(tiny_model_dir),
        trainer_min_records=4,
        trainer_steps_per_round=3,
        trainer_candidate_every_rounds=2,
        trainer_heldout_fraction=0.25,
        trainer_judge_fresh_traces=4,
        trainer_read_batch=12,
        trainer_batch_tokens=512,
        draft_vocab_size=256,
    )
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}*", count=500):
        client.delete(key)
    client.close()


def push(settings: Settings, records: list[TraceRecord]) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    stream = TraceBusConfig.from_settings(settings).stream
    for record in records:
        client.xadd(stream, {PAYLOAD_FIELD: encode(record)})
    client.close()


def pending(settings: Settings) -> int:
    config = TraceBusConfig.from_settings(settings)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return int(client.xpending(config.stream, config.group)["pending"])
    finally:
        client.close()


def new_trainer(settings: Settings, target: LlamaModel, control: FakeControlPlane) -> OnlineTrainer:
    consumer = TraceConsumer(TraceBusConfig.from_settings(settings), "trainer-test")
    return OnlineTrainer(settings.trainer, target, consumer, control)


def test_rounds_checkpoint_ack_publish_and_resume(
    settings: Settings, target: LlamaModel, records: list[TraceRecord]
) -> None:
    control = FakeControlPlane()
    client = redis.Redis.from_url(settings.redis_url)
    client.xadd(TraceBusConfig.from_settings(settings).stream, {PAYLOAD_FIELD: b"{not json"})
    client.close()
    push(settings, records[:23])
    trainer = new_trainer(settings, target, control)
    first = trainer.run_round()
    assert first["status"] == "trained" and first["read"] == 11
    assert pending(settings) == 0  # acked, and only after the checkpoint below was written
    assert (settings.home / "trainer" / "checkpoints" / LATEST).is_file()
    after_first = control.progress[-1]
    second = trainer.run_round()
    assert second["status"] == "trained"
    assert trainer.consumer.stats().dead_lettered["bad_json"] == 1
    (published,) = control.published
    assert published["files"] == ["draft.safetensors", "manifest.json"]
    assert not published["dir"].exists(), "a published candidate's files stay on the trainer's disk"
    shadow = published["shadow_eval"]
    assert set(shadow) >= {"all", "code"} and shadow["all"]["live"] == 1.0
    assert shadow["all"]["candidate"] >= 1.0
    # test, then train: round 2's candidate (the draft of round 1) is judged on every held-out trace and
    # on every trace round 2 read, which it trains on only after
    fresh = control.progress[-1].trained_records - after_first.trained_records
    assert fresh > 0 and shadow["all"]["traces"] == control.progress[-1].heldout_records + fresh
    assert len(trainer.intake.replay) == control.progress[-1].trained_records and not trainer.intake.probation
    metrics = published["metrics"]
    assert metrics["round"] == 1 and metrics["loss"] > 0 and 0 <= metrics["top1"] <= 1  # round 1's draft
    heldout = [t for record in trainer.candidates.heldout.records() for t in record.output_ids]
    assert trainer.trainer is not None
    assert metrics["vocab_coverage"] == {"code": round(trainer.trainer.draft.vocab.coverage(heldout), 4)}
    progress = control.progress[-1]  # one report per round, the counters a benchmark waits on
    assert [p.round for p in control.progress] == [1, 2]
    assert progress.optimizer_steps == trainer.trainer.steps_done == 2 * settings.trainer_steps_per_round
    assert progress.acked_records == 23  # every valid trace read; the bad one went to the dead letters
    assert progress.trained_records + progress.heldout_records == 23 and progress.heldout_records > 0
    assert progress.last_candidate == "v1" and progress.last_candidate_round == 1
    assert progress.cpu_seconds > 0 and progress.rss_bytes > 0 and progress.trained_rows > 0

    control.paused = True
    assert trainer.run_round() == {"status": "paused"}
    control.paused = False

    resumed = new_trainer(settings, target, control)
    assert resumed.state.round == 2 and resumed.trainer is not None and trainer.trainer is not None
    for a, b in zip(trainer.trainer.draft.parameters(), resumed.trainer.draft.parameters(), strict=True):
        assert torch.equal(a, b)
    assert len(resumed.intake.replay) == len(trainer.intake.replay)

    # a round that read traces and died before its checkpoint: they come back to the next trainer
    push(settings, records[24:])
    assert resumed.intake.read(resumed.state) == len(records) - 24
    assert pending(settings) == len(records) - 24
    after_crash = new_trainer(settings, target, control)
    report = after_crash.run_round()
    assert report["read"] == len(records) - 24 and report["round"] == 2
    assert pending(settings) == 0


def test_a_due_candidate_waits_for_fresh_traces_and_they_wait_untrained_across_a_restart(
    settings: Settings, target: LlamaModel, records: list[TraceRecord]
) -> None:
    """Too few unseen traces to judge on: they stay on probation (checkpointed, never trained on) until
    enough arrive, or traffic stops; then the candidate is judged on them, and only then trained on."""
    control = FakeControlPlane()
    update = {"trainer_judge_fresh_traces": 14, "trainer_candidate_every_rounds": 1}
    waiting = settings.model_copy(update=update)
    push(settings, records[:12])
    trainer = new_trainer(waiting, target, control)
    assert trainer.run_round()["status"] == "trained" and not trainer.intake.probation
    trained = len(trainer.intake.replay)
    push(settings, records[12:20])
    held = trainer.run_round()
    assert "candidate" not in held and not control.published
    on_probation = [r.request_id for r in trainer.intake.probation]
    assert on_probation and len(trainer.intake.replay) == trained  # read, kept out of training
    assert pending(settings) == 0  # acked: the checkpoint holds them

    resumed = new_trainer(waiting, target, control)
    assert [r.request_id for r in resumed.intake.probation] == on_probation
    resumed._round_losses = trainer._round_losses  # trained since its last candidate (in memory only)
    report = resumed.run_round()  # nothing more arrives: judged on what waits
    assert report["read"] == 0 and report["candidate"]["published"]
    (published,) = control.published
    heldout = len(resumed.intake.heldout.records())
    assert published["shadow_eval"]["all"]["traces"] == heldout + len(on_probation)
    assert not resumed.intake.probation and len(resumed.intake.replay) == trained + len(on_probation)


def test_steps_per_trace_ties_optimizer_steps_to_the_traces_trained(
    settings: Settings, target: LlamaModel, records: list[TraceRecord]
) -> None:
    """A dedicated trainer's budget: S steps per newly trained trace, fractions carried to the next round."""
    control = FakeControlPlane()
    push(settings, records[:23])
    trainer = new_trainer(settings.model_copy(update={"trainer_steps_per_trace": 0.5}), target, control)
    first, second = trainer.run_round(), trainer.run_round()
    assert first["status"] == second["status"] == "trained"
    trained = control.progress[-1].trained_records
    assert first["training"]["steps"] + second["training"]["steps"] == int(0.5 * trained)
    assert control.progress[-1].optimizer_steps == int(0.5 * trained)
    assert trainer.run_round()["status"] == "idle"  # nothing new read: nothing owed


def test_a_trainer_without_a_draft_yet_reports_the_traces_it_holds(
    settings: Settings, target: LlamaModel, records: list[TraceRecord]
) -> None:
    control = FakeControlPlane()
    push(settings, records[:6])
    trainer = new_trainer(settings.model_copy(update={"trainer_min_records": 20}), target, control)
    assert trainer.run_round()["status"] == "idle" and trainer.trainer is None
    (progress,) = control.progress
    assert progress.acked_records == 0 and progress.holding_records == 6  # read, kept until it can start
    assert pending(settings) == 6


def test_a_round_whose_outputs_fall_outside_the_vocabulary_remaps_cold_rows(
    settings: Settings, target: LlamaModel, records: list[TraceRecord]
) -> None:
    control = FakeControlPlane()
    push(settings, records[:12])
    trainer = new_trainer(settings.model_copy(update={"trainer_remap_min_tokens": 12}), target, control)
    assert trainer.run_round()["status"] == "trained" and trainer.trainer is not None
    vocab = trainer.trainer.draft.vocab
    outside = [t for t in range(target.spec.vocab_size) if int(vocab.target_to_draft[t]) < 0][:3]
    new_domain_round = [outside * 4]  # three frequent tokens the draft cannot propose
    remap = trainer._remap(new_domain_round)
    assert remap is not None and remap["rows"] == 3 and remap["vocab_version"] == 1
    assert remap["coverage_before"] == 0.0 and remap["coverage_after"] == 1.0
    assert all(int(trainer.trainer.draft.vocab.target_to_draft[t]) >= 0 for t in outside)
    assert trainer.trainer.candidate().vocab.same_as(trainer.trainer.draft.vocab)  # what is published
    push(settings, records[12:23])
    second = trainer.run_round()  # examples rebuilt for the new vocabulary (and, if its outputs hold
    assert second["status"] == "trained"  # tokens still outside, another remap)
    (published,) = control.published
    metrics = published["metrics"]
    assert metrics["vocab_version"] == 1  # judged before round 2's traces were learned (and remapped for)
    assert trainer.state.vocab_version == 1 + ("remap" in second)
    assert metrics["rows_remapped"] >= 3
    resumed = new_trainer(settings, target, control)
    assert resumed.trainer is not None and resumed.trainer.draft.vocab.same_as(trainer.trainer.draft.vocab)


def test_a_remap_is_decided_only_once_enough_new_tokens_have_gathered(
    settings: Settings, target: LlamaModel, records: list[TraceRecord]
) -> None:
    """One trace's words are noise: their coverage alone would remap a few rows every round."""
    push(settings, records[:12])
    trainer = new_trainer(
        settings.model_copy(update={"trainer_remap_min_tokens": 24}), target, FakeControlPlane()
    )
    assert trainer.run_round()["status"] == "trained" and trainer.trainer is not None
    vocab = trainer.trainer.draft.vocab
    outside = [t for t in range(target.spec.vocab_size) if int(vocab.target_to_draft[t]) < 0][:3]
    assert trainer._remap([outside * 4]) is None  # 12 tokens gathered: no decision yet
    assert trainer.state.vocab_version == 0
    remap = trainer._remap([outside * 4])  # 24: decided on both outputs together
    assert remap is not None and remap["rows"] == 3 and remap["coverage_before"] == 0.0
    vocab = trainer.trainer.draft.vocab
    covered = [t for t in range(target.spec.vocab_size) if int(vocab.target_to_draft[t]) >= 0][:24]
    assert trainer._remap([covered]) is None  # decided on 24 covered tokens: nothing to remap
    assert trainer.state.vocab_version == 1


def test_duty_cycle_paces_shadow_evaluation_work(settings: Settings, target: LlamaModel) -> None:
    """Work outside optimizer steps (held-out prefills, simulated acceptance) rests in proportion too."""
    trainer = new_trainer(
        settings.model_copy(update={"trainer_duty_cycle": 0.25}), target, FakeControlPlane()
    )

    def busy(seconds: float) -> str:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
        return "done"

    started = time.monotonic()
    assert trainer.pacer.paced(busy, 0.05) == "done"
    assert time.monotonic() - started >= 0.05 / 0.25  # busy 0.05 s, then rest 0.15 s


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_round(
    settings: Settings, target: LlamaModel, records: list[TraceRecord]
) -> None:
    control = FakeControlPlane()
    push(settings, records[:23])
    trainer = new_trainer(settings, target, control)
    assert trainer.run_round()["status"] == "trained"
    assert trainer.run_round()["status"] == "trained"
    root = settings.home / "trainer" / "checkpoints"
    latest = root / (root / LATEST).read_text().strip()
    assert sorted(p.name for p in root.glob("round-*")) == ["round-00000001", latest.name]
    (latest / "draft" / "draft.safetensors").write_bytes(b"\x00" * 64)  # a torn write
    resumed = new_trainer(settings, target, control)
    assert resumed.state.round == 1 and resumed.trainer is not None
    push(settings, records[24:])
    report = resumed.run_round()
    assert report["status"] == "trained" and report["round"] == 1
    assert pending(settings) == 0


def test_files_a_killed_trainer_left_behind_are_removed_when_one_starts(
    settings: Settings, target: LlamaModel
) -> None:
    """A trainer killed while publishing a candidate or fetching the live draft leaves its files; the
    next one clears both (neither is used again: candidates are rebuilt, the live draft refetched)."""
    left = [settings.trainer.root / "candidates" / "v0003" / "draft.safetensors"]
    left.append(settings.trainer.root / "live" / "v0002" / "draft.safetensors")
    for path in left:
        path.parent.mkdir(parents=True)
        path.write_bytes(b"partial")
    new_trainer(settings, target, FakeControlPlane())
    assert not any(path.exists() for path in left)


def test_a_live_draft_made_for_another_target_is_refused_not_trained(target: LlamaModel) -> None:
    import dataclasses

    from worker.draft.io import DraftArtifactError
    from worker.draft.model import new_draft
    from worker.draft.vocab import DraftVocab
    from worker.training.candidates import check_fits

    vocab = DraftVocab.from_counts(Counter(range(64)), 64, target.spec.vocab_size)
    check_fits(new_draft(target.spec, vocab), target)
    other = dataclasses.replace(target.spec, hidden_size=target.spec.hidden_size * 2, head_dim=32)
    with pytest.raises(DraftArtifactError, match="hidden size"):
        check_fits(new_draft(other, vocab), target)


def test_the_live_drafts_held_out_counts_are_computed_once_per_version(
    tmp_path: Path, target: LlamaModel, records: list[TraceRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Candidates after the first re-score only new held-out traces with the live draft, and judge
    exactly as an evaluation from scratch would."""
    from worker.draft.io import save_draft
    from worker.draft.model import new_draft
    from worker.draft.trainer import DraftTrainer, TrainConfig
    from worker.draft.vocab import DraftVocab
    from worker.training import candidates as candidates_module
    from worker.training.examples_cache import ExampleCache
    from worker.training.heldout import HeldOut
    from worker.training.pacing import Pacer

    vocab = DraftVocab.from_sequences(
        [r.prompt_ids + r.output_ids for r in records], 256, target.spec.vocab_size
    )
    live = new_draft(target.spec, vocab, seed=4)

    class WithLiveDraft(FakeControlPlane):
        def fetch_draft(self, version: str, out_dir: Path) -> None:
            save_draft(live, out_dir, version=version)

    def judge(heldout: HeldOut, max_traces: int = 64) -> candidates_module.Candidates:
        examples = ExampleCache(target, 100_000)
        return candidates_module.Candidates(
            tmp_path / uuid.uuid4().hex, target, WithLiveDraft(), examples, heldout, Pacer(1.0), 3, max_traces
        )

    scored: list[int] = []
    real = candidates_module.per_trace_counts

    def counting(draft: Any, embed: Any, examples: list[Any], depth: int) -> list[tuple[int, int]]:
        scored.append(len(examples))
        return real(draft, embed, examples, depth)

    monkeypatch.setattr(candidates_module, "per_trace_counts", counting)
    heldout = HeldOut(1.0, 64, 1.0)
    for record in records[:6]:
        heldout.add(record)
    trainer = DraftTrainer(new_draft(target.spec, vocab, seed=5), target.embed, TrainConfig())
    candidates = judge(heldout)
    candidates.shadow_eval(trainer, "v1", [])
    assert scored == [6, 6]  # the candidate, then the live draft
    for record in records[6:8]:
        heldout.add(record)
    second = candidates.shadow_eval(trainer, "v1", [])
    assert scored[2:] == [8, 2]  # the live draft: the two new traces only
    assert second == judge(heldout).shadow_eval(trainer, "v1", [])
    capped = judge(heldout, max_traces=3).shadow_eval(trainer, "v1", records[8:10])
    assert scored[6:] == [3, 3] and capped["all"]["traces"] == 3  # the newest three: judging is bounded


def test_a_live_draft_of_another_vocabulary_is_judged_as_on_its_own_examples(
    tmp_path: Path, target: LlamaModel, records: list[TraceRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a remap the live draft is scored on the candidate's examples, built for the candidate's
    vocabulary: what a score reads of them is what examples built for its own vocabulary hold."""
    from worker.draft.io import save_draft
    from worker.draft.model import new_draft
    from worker.draft.trainer import DraftTrainer, TrainConfig
    from worker.draft.vocab import DraftVocab
    from worker.training import candidates as candidates_module
    from worker.training.examples_cache import ExampleCache
    from worker.training.heldout import HeldOut
    from worker.training.pacing import Pacer

    sequences = [r.prompt_ids + r.output_ids for r in records]
    ours = DraftVocab.from_sequences(sequences, 256, target.spec.vocab_size)
    theirs = DraftVocab.from_sequences(sequences, 128, target.spec.vocab_size)
    assert not ours.same_as(theirs)
    live = new_draft(target.spec, theirs, seed=4)

    class WithLiveDraft(FakeControlPlane):
        def fetch_draft(self, version: str, out_dir: Path) -> None:
            save_draft(live, out_dir, version=version)

    scored: list[tuple[Any, list[Any]]] = []
    real = candidates_module.per_trace_counts

    def recording(draft: Any, embed: Any, examples: list[Any], depth: int) -> list[tuple[int, int]]:
        scored.append((draft, examples))
        return real(draft, embed, examples, depth)

    monkeypatch.setattr(candidates_module, "per_trace_counts", recording)
    heldout = HeldOut(1.0, 64, 1.0)
    for record in records[:6]:
        heldout.add(record)
    cache = ExampleCache(target, 100_000)
    candidates = candidates_module.Candidates(
        tmp_path / "c", target, WithLiveDraft(), cache, heldout, Pacer(1.0), 3, 64
    )
    trainer = DraftTrainer(new_draft(target.spec, ours, seed=5), target.embed, TrainConfig())
    candidates.shadow_eval(trainer, "v1", [])
    (given,) = [examples for draft, examples in scored if draft.vocab.same_as(theirs)]
    own = [cache.build(record, theirs) for record in records[:6]]
    assert len(given) == len(own) == 6
    for a, b in zip(given, own, strict=True):
        assert a.prompt_len == b.prompt_len
        for name in ("tokens", "features", "target_argmax"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
