"""Online training rounds: traces in, a better draft out, without losing acknowledged work.

One round: ask the control plane whether learning is on; read traces (own unacked backlog first);
hold a share out for shadow evaluation and put the rest in the replay buffer; update drift (a shift
raises the learning rate for a while); train a few steps; checkpoint; only then ack what was read.
Every ``trainer_candidate_every_rounds`` rounds the draft becomes a candidate: shadow-evaluated
against the live draft on the held-out traces and published to the control plane.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from borealis.control_client import ControlPlaneError
from borealis.domains import OTHER, canonical_domain
from borealis.processes import rss_kib
from borealis.settings import Settings, TrainerSettings
from borealis.wire import DriftReport, TraceRecord, TrainerProgress
from worker.draft.examples import Example
from worker.draft.io import DraftArtifactError, load_draft, save_draft
from worker.draft.model import Eagle3Draft, new_draft
from worker.draft.remap import apply_remap, plan_remap
from worker.draft.shadow import paired_interval, per_trace_counts, pooled_acceptance
from worker.draft.trainer import DraftTrainer, StepMetrics, TrainConfig
from worker.draft.vocab import DraftVocab
from worker.engine.llama import LlamaModel
from worker.traces.codec import Rejection
from worker.traces.consumer import TraceConsumer
from worker.traces.drift import DriftMonitor, DriftWindow
from worker.traces.features import FeatureReader, feature_reader
from worker.traces.replay import ReplayBuffer, record_tokens
from worker.training.checkpoint import TrainerState, load_checkpoint, save_checkpoint
from worker.training.control import ControlPlane
from worker.training.examples_cache import ExampleCache
from worker.training.heldout import HeldOut
from worker.training.reports import CandidateReport, RemapReport, RoundReport, TrainingReport

log = logging.getLogger(__name__)

T = TypeVar("T")


def consumer_name(settings: Settings) -> str:
    return settings.trainer_consumer_name or f"trainer-{socket.gethostname()}"


class OnlineTrainer:
    def __init__(
        self,
        settings: TrainerSettings,
        target: LlamaModel,
        consumer: TraceConsumer,
        control: ControlPlane,
        features: FeatureReader | None = None,
    ):
        self.settings = settings
        self.target = target
        self.consumer = consumer
        self.control = control
        self.root = settings.root
        # A trainer killed while publishing leaves its candidate's files behind; it is never published.
        shutil.rmtree(self.root / "candidates", ignore_errors=True)
        self.replay = ReplayBuffer(
            settings.replay_max_records,
            settings.replay_max_tokens,
            settings.replay_half_life_seconds,
            max_caller_share=settings.max_caller_share,
        )
        self.heldout = HeldOut(
            settings.heldout_fraction, settings.heldout_max_records, settings.max_caller_share
        )
        self.drift = DriftMonitor.from_settings(settings.drift)
        self.state = TrainerState()
        self.trainer: DraftTrainer | None = None
        self._unacked: list[str] = []
        self._seen: set[str] = set()
        self._examples = ExampleCache(target, settings.feature_cache_tokens, features)
        self._live: tuple[str, Eagle3Draft] | None = None
        self._round_losses: list[tuple[float, float]] = []  # (loss, top-1) of rounds since the last candidate
        self._fresh = 0  # traces put in the replay buffer since the last round that trained
        self._recent: list[list[int]] = []  # outputs of the traces put in the replay buffer this round
        self._step_credit = 0.0  # steps owed under ``steps_per_trace``, fractions carried over
        self._resume()

    # -- lifecycle -----------------------------------------------------------------------------

    def _resume(self) -> None:
        checkpoint = load_checkpoint(self.root / "checkpoints")
        if checkpoint is None:
            return
        self.state = checkpoint.state
        self.trainer = self._new_trainer(checkpoint.draft)
        if checkpoint.optimizer is not None:
            self.trainer.optimizer.load_state_dict(checkpoint.optimizer)
        self.trainer.steps_done = self.state.optimizer_steps
        for record in checkpoint.replay:
            self.replay.add(record)
        for record in checkpoint.heldout:
            self.heldout.add(record)
        self._seen = set(self.state.acked_ids)
        self.consumer.ack(self.state.acked_ids)  # the crash may have come between checkpoint and ack
        log.info("trainer resumed at round %d", self.state.round)

    def _new_trainer(self, draft: Eagle3Draft) -> DraftTrainer:
        s = self.settings
        config = TrainConfig(
            lr=s.lr, rejected_weight=s.rejected_weight, batch_tokens=s.batch_tokens, bf16=s.bf16
        )
        return DraftTrainer(draft, self.target.embed, config)

    def _start_draft(self, live: str | None) -> None:
        """The live draft if there is one (learning continues from what serves), else day-0 weights."""
        if live is not None:
            draft = self._live_draft(live)
            if draft is not None:
                self.trainer = self._new_trainer(self._copy(draft))
                self.state.live_version = live
                return
        if len(self.replay) < self.settings.min_records:
            return
        outputs: dict[str, list[list[int]]] = {}
        for record in self.replay.sample(len(self.replay)):
            outputs.setdefault(record.domain, []).append(record.output_ids)
        vocab = DraftVocab.from_outputs(outputs, self.settings.draft_vocab_size, self.target.spec.vocab_size)
        self._recent = []  # the new vocabulary was chosen from these very outputs
        self.trainer = self._new_trainer(new_draft(self.target.spec, vocab))

    def _copy(self, draft: Eagle3Draft) -> Eagle3Draft:
        copy = Eagle3Draft(draft.config, draft.vocab)
        copy.load_state_dict(draft.state_dict())
        return copy

    # -- one round ------------------------------------------------------------------------------

    def run_round(self) -> RoundReport:
        paused, live = self.control.learning_state()
        if paused:
            return {"status": "paused"}
        if self.state.live_version is None and live is not None:
            self.state.live_version = live
        read = self._intake()
        if self.trainer is None:
            self._start_draft(live)
        report: RoundReport = {"status": "idle", "round": self.state.round, "read": read}
        sources = self._examples.sources
        report["examples"] = {"from_features": sources.from_features, "by_prefill": sources.by_prefill}
        if self.trainer is not None and self._recent:
            remap = self._remap()
            if remap is not None:
                report["remap"] = remap
        self._recent = []
        ready = self.trainer is not None and len(self.replay) >= self.settings.min_records and read
        steps = self._steps_due() if ready else 0
        if steps:
            report["training"] = self._train(steps)
            report["status"] = "trained"
        if self.trainer is not None and self._unacked:
            self.state.round += 1
            self._checkpoint()
            due = self.state.round % self.settings.candidate_every_rounds == 0
            if due and self._round_losses:  # nothing trained since the last candidate: nothing new
                report["candidate"] = self.candidate(live)
        if read or report["status"] != "idle":
            self.control.report_progress(self.progress(report["status"]))
        return report

    def progress(self, status: str) -> TrainerProgress:
        """The counters an operator (or a benchmark waiting on the trainer) reads after a round."""
        sources = self._examples.sources
        state = self.state
        return TrainerProgress(
            trainer=self.consumer.name,
            round=state.round,
            status=status,
            optimizer_steps=state.optimizer_steps,
            trained_records=state.trained_records,
            heldout_records=state.heldout_records,
            trained_rows=state.trained_rows,
            acked_records=state.acked_records,
            holding_records=len(set(self._unacked)),
            last_candidate=state.last_candidate,
            last_candidate_round=state.last_candidate_round,
            examples_from_features=sources.from_features,
            examples_by_prefill=sources.by_prefill,
            cpu_seconds=time.process_time(),
            rss_bytes=1024 * (rss_kib() or 0),
        )

    def _remap(self) -> RemapReport | None:
        """Cold vocabulary rows to the missing tokens of this round's outputs, when coverage is low."""
        assert self.trainer is not None
        s = self.settings
        vocab = self.trainer.draft.vocab
        tokens = [t for output in self._recent for t in output]
        if not s.remap_max_rows or not tokens or vocab.coverage(tokens) >= s.remap_below_coverage:
            return None
        usage: Counter[int] = Counter()
        for record in self.replay.records():
            usage.update(record.output_ids)
        plan = plan_remap(vocab, self._recent, usage, s.remap_max_rows)
        if not plan.rows:
            return None
        apply_remap(self.trainer.draft, plan, self.target, self.trainer.optimizer)
        self._examples.clear()  # built for the old vocabulary
        self.state.vocab_version += 1
        self.state.rows_remapped += len(plan.rows)
        log.info(
            "draft vocabulary v%d: %d rows remapped, round coverage %.3f -> %.3f",
            self.state.vocab_version,
            len(plan.rows),
            plan.coverage_before,
            plan.coverage_after,
        )
        return {
            "vocab_version": self.state.vocab_version,
            "rows": len(plan.rows),
            "coverage_before": round(plan.coverage_before, 4),
            "coverage_after": round(plan.coverage_after, 4),
        }

    def _steps_due(self) -> int:
        """Optimizer steps for this round: fixed, or ``steps_per_trace`` per newly trained trace."""
        per_trace = self.settings.steps_per_trace
        if per_trace <= 0:
            return self.settings.steps_per_round
        self._step_credit += per_trace * self._fresh
        self._fresh = 0
        steps = int(self._step_credit)
        self._step_credit -= steps
        return steps

    def _intake(self) -> int:
        deliveries = self.consumer.read(self.settings.read_batch, block_ms=1000)
        vocab = self.target.spec.vocab_size
        for delivery in deliveries:
            self._unacked.append(delivery.entry_id)
            record = delivery.record
            domain = canonical_domain(record.domain, self.settings.allowed_domains) or OTHER
            if domain != record.domain:  # a label the operator does not allow: counted as `other`
                record = record.model_copy(update={"domain": domain})
            tokens = record.prompt_ids + record.output_ids
            if delivery.entry_id in self._seen or not record.output_ids:
                continue  # already trained on, or nothing generated: acked, not learned
            if max(tokens) >= vocab:
                detail = f"token id {max(tokens)} outside the target's vocabulary of {vocab}"
                self.consumer.reject(delivery, Rejection("foreign_tokens", detail))
                continue
            window = self.drift.observe(record)
            if window is not None:
                self.control.report_drift(self._drift_report(window))
            if window is not None and window.shift:
                self.state.boost_rounds_left = self.settings.shift_boost_rounds
                log.info("domain shift detected (window %d): learning rate raised", window.index)
            if self.heldout.takes(record):
                self.heldout.add(record)
                self.state.heldout_records += 1
            else:
                self.replay.add(record)
                self.state.trained_records += 1
                self._fresh += 1
                self._recent.append(record.output_ids)
                start, end = self.state.window_start, self.state.window_end
                self.state.window_start = min(start, record.finished_at) if start else record.finished_at
                self.state.window_end = max(end or 0.0, record.finished_at)
        return len(deliveries)

    def _drift_report(self, window: DriftWindow) -> DriftReport:
        return DriftReport(
            trainer=self.consumer.name,
            js_threshold=self.settings.drift.js_threshold,
            mix_threshold=self.settings.drift.mix_threshold,
            **dataclasses.asdict(window),
        )

    def _train(self, steps: int) -> TrainingReport:
        assert self.trainer is not None
        boosted = self.state.boost_rounds_left > 0
        self.trainer.lr_scale = self.settings.shift_lr_boost if boosted else 1.0
        self.state.boost_rounds_left = max(0, self.state.boost_rounds_left - 1)
        budget = self.settings.batch_tokens
        mean_len = max(1, self.replay.tokens // max(1, len(self.replay)))
        per_step = max(1, budget // mean_len)
        losses, top1 = [], []
        for step in range(steps):
            if step and self.control.learning_state()[0]:
                break  # paused mid-round: stop using the CPU now; what was read is still checkpointed
            records = [
                r for r in self.replay.sample(per_step) if record_tokens(r) <= budget
            ] or self.replay.sample(1)
            metrics = self._paced(self._train_step, records)
            self.state.trained_rows += metrics.tokens
            losses.append(metrics.loss)
            top1.append(metrics.top1[0])
        self.state.optimizer_steps = self.trainer.steps_done
        loss, accuracy = sum(losses) / len(losses), sum(top1) / len(top1)
        self._round_losses.append((loss, accuracy))
        return {"loss": loss, "top1": accuracy, "lr_boost": boosted, "steps": len(losses)}

    def _train_step(self, records: list[TraceRecord]) -> StepMetrics:
        assert self.trainer is not None
        return self.trainer.train_step([self._example(r) for r in records])

    def _rest(self, busy_s: float) -> None:
        """Keep computing to ``trainer_duty_cycle`` of wall time (co-located serving needs the rest)."""
        duty = self.settings.duty_cycle
        if duty < 1.0:
            time.sleep(busy_s * (1.0 / duty - 1.0))

    def _paced(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)``, then rest in proportion (optimizer steps, shadow evaluation)."""
        started = time.monotonic()
        result = work(*args)
        self._rest(time.monotonic() - started)
        return result

    def _example(self, record: TraceRecord) -> Example:
        """Target features are recomputed (one prefill) and kept while the cache's token budget allows."""
        assert self.trainer is not None
        return self._examples.get(record, self.trainer.draft.vocab)

    def _checkpoint(self) -> None:
        assert self.trainer is not None
        self.state.acked_ids = list(self._unacked)
        self.state.acked_records += len(set(self._unacked) - self._seen)
        heldout = self.heldout.records()
        # ReplayBuffer offers no iteration yet, and its records must survive a restart
        replay = self.replay.records()
        save_checkpoint(
            self.root / "checkpoints", self.state, self.trainer.draft, self.trainer.optimizer, replay, heldout
        )
        self.consumer.ack(self._unacked)
        self._seen = set(self._unacked)
        self._unacked = []

    # -- candidates -----------------------------------------------------------------------------

    def shadow_eval(self, live: str | None) -> dict[str, dict[str, float]]:
        """Simulated acceptance of the candidate and of the live draft on the same held-out traces.

        The most recent held-out traces, whatever their domain: after a shift the candidate is
        judged on the traffic it will serve, not on a domain that no longer arrives. Per domain and
        ``all``: both pooled means, the trace count, and the paired 95 % interval of the per-trace
        difference (``diff_low``, ``diff_high``) that the approval policy judges by.
        """
        assert self.trainer is not None
        depth = self.settings.eval_depth
        records = self.heldout.for_evaluation()
        examples = [self._paced(self._example, r) for r in records]
        ours = self._paced(per_trace_counts, self.trainer.draft, self.trainer.embed, examples, depth)
        live_draft = self._live_draft(live) if live else None
        if live_draft is None:
            theirs = [(s, s) for _, s in ours]  # no draft: one token per target step
        else:
            if live_draft.vocab.same_as(self.trainer.draft.vocab):
                live_examples = examples  # one lineage, one vocabulary: no second prefill per trace
            else:
                live_examples = [self._paced(self._examples.build, r, live_draft.vocab) for r in records]
            theirs = self._paced(per_trace_counts, live_draft, self.trainer.embed, live_examples, depth)
        candidate, baseline = pooled_acceptance(examples, ours), pooled_acceptance(examples, theirs)
        report = {}
        for domain, value in candidate.items():
            rows = [i for i, e in enumerate(examples) if domain in ("all", e.domain) and ours[i][1]]
            low, high = paired_interval(
                [ours[i][0] / ours[i][1] for i in rows], [theirs[i][0] / theirs[i][1] for i in rows]
            )
            report[domain] = {
                "candidate": value,
                "live": baseline.get(domain, 1.0),
                "traces": float(len(rows)),
                "diff_low": low,
                "diff_high": high,
            }
        return report

    def _coverage(self) -> dict[str, float]:
        """Per domain, the share of held-out output tokens the draft's vocabulary can propose at all:
        the ceiling on its acceptance there, and the sign a new domain's tokens fall outside it."""
        assert self.trainer is not None
        outputs: dict[str, list[int]] = {}
        for record in self.heldout.records():
            outputs.setdefault(record.domain, []).extend(record.output_ids)
        vocab = self.trainer.draft.vocab
        return {domain: round(vocab.coverage(tokens), 4) for domain, tokens in sorted(outputs.items())}

    def candidate(self, live: str | None) -> CandidateReport:
        assert self.trainer is not None
        if not self.heldout:
            return {"published": False, "reason": "no held-out traces yet"}
        shadow = self.shadow_eval(live)
        metrics: dict[str, Any] = {
            "round": self.state.round,
            "optimizer_steps": self.state.optimizer_steps,
            "trained_records": self.state.trained_records,
            "replay_domains": self.replay.domain_counts(),
            "vocab_coverage": self._coverage(),
            "vocab_version": self.state.vocab_version,
            "rows_remapped": self.state.rows_remapped,
            "rejected_weight": self.settings.rejected_weight,
            "examples_from_features": self._examples.sources.from_features,
            "examples_by_prefill": self._examples.sources.by_prefill,
        }
        if self._round_losses:
            metrics["loss"] = sum(loss for loss, _ in self._round_losses) / len(self._round_losses)
            metrics["top1"] = sum(top1 for _, top1 in self._round_losses) / len(self._round_losses)
        window = {"from": self.state.window_start, "to": self.state.window_end}
        out = self.root / "candidates" / f"round-{self.state.round:08d}"
        save_draft(
            self.trainer.draft,
            out,
            parent_version=live,
            extra={"training": metrics, "shadow_eval": shadow, "vocab_version": self.state.vocab_version},
        )
        try:
            result = self.control.publish(out, live, shadow, metrics, window)
        except (ControlPlaneError, OSError) as exc:
            log.warning("candidate from round %d not published: %s", self.state.round, exc)
            return {"published": False, "reason": str(exc), "shadow_eval": shadow}
        finally:
            shutil.rmtree(out, ignore_errors=True)  # uploaded, or superseded by the next candidate
        self.state.last_candidate = result.version
        self.state.last_candidate_round = self.state.round
        self._round_losses = []
        self.state.window_start = self.state.window_end = None
        return {"published": True, "shadow_eval": shadow, "version": result.version, "status": result.status}

    def _live_draft(self, version: str) -> Eagle3Draft | None:
        if self._live is not None and self._live[0] == version:
            return self._live[1]
        directory = self.root / "live" / version
        try:
            self.control.fetch_draft(version, directory)
            draft, _ = load_draft(directory)
            _check_fits(draft, self.target)
        except (ControlPlaneError, DraftArtifactError, OSError) as exc:
            # Unusable (gone, corrupt, or made for another target): learn on without it.
            log.warning("live draft %s unavailable: %s", version, exc)
            return None
        finally:
            shutil.rmtree(directory, ignore_errors=True)  # kept in memory; files would pile up per version
        self._live = (version, draft)
        return draft


def _check_fits(draft: Eagle3Draft, target: LlamaModel) -> None:
    """A draft trained for another target would fail every round: refuse it at load time."""
    config, spec = draft.config, target.spec
    if (config.hidden_size, config.target_vocab_size) != (spec.hidden_size, spec.vocab_size):
        raise DraftArtifactError(
            f"draft for hidden size {config.hidden_size} / vocabulary {config.target_vocab_size}, "
            f"target has {spec.hidden_size} / {spec.vocab_size}"
        )


def build_trainer(settings: Settings, control: ControlPlane) -> OnlineTrainer:
    from borealis.tracebus import TraceBusConfig

    torch.set_num_threads(settings.resolved_trainer_threads)
    target = LlamaModel.load(settings.resolved_model_path)
    bus = TraceBusConfig.from_settings(settings)
    consumer = TraceConsumer(bus, consumer_name(settings))
    features = feature_reader(bus, 4 * target.spec.hidden_size) if bus.record_features else None
    return OnlineTrainer(settings.trainer, target, consumer, control, features)


def seconds_until_next(report: RoundReport, settings: Settings) -> float:
    return 0.0 if report.get("status") == "trained" else settings.trainer_idle_seconds
