"""How a trained draft becomes a candidate: judged against the live draft, then published.

Shadow evaluation scores the candidate and the live draft by simulated chain acceptance on the same
traces neither has trained on, the newest of those on probation and held out (paired per trace, so
the approval policy can ask for an interval above zero); publishing uploads the artifact with its
training metrics and data window, and never leaves the candidate's files behind.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from borealis.control_client import ControlPlaneError
from borealis.wire import TraceRecord, UploadResult
from worker.draft.examples import Example
from worker.draft.io import DraftArtifactError, load_draft, save_draft
from worker.draft.model import Eagle3Draft
from worker.draft.shadow import (
    paired_by_domain,
    per_trace_counts,
    pooled_acceptance,
    traffic_weighted_diff,
    traffic_weights,
)
from worker.draft.trainer import DraftTrainer
from worker.draft.vocab import DraftVocab
from worker.engine.llama import LlamaModel
from worker.training.control import ControlPlane
from worker.training.examples_cache import ExampleCache
from worker.training.heldout import HeldOut
from worker.training.pacing import Pacer

log = logging.getLogger(__name__)

ShadowEval = dict[str, dict[str, float]]


class Candidates:
    def __init__(
        self,
        root: Path,
        target: LlamaModel,
        control: ControlPlane,
        examples: ExampleCache,
        heldout: HeldOut,
        pacer: Pacer,
        eval_depth: int,
        max_traces: int,
    ) -> None:
        self.dir = root / "candidates"
        self.live_dir = root / "live"
        self.target = target
        self.control = control
        self.examples = examples
        self.heldout = heldout
        self.pacer = pacer
        self.eval_depth = eval_depth
        self.max_traces = max_traces
        self._live: tuple[str, Eagle3Draft] | None = None
        self._live_scores: tuple[str | None, dict[str, tuple[int, int]]] = (None, {})
        # A trainer killed while publishing leaves its candidate's files behind (it is never published),
        # or while fetching the live draft, that draft's (it is fetched again when needed).
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.live_dir, ignore_errors=True)

    def shadow_eval(self, trainer: DraftTrainer, live: str | None, fresh: list[TraceRecord]) -> ShadowEval:
        """Simulated acceptance of the candidate and of the live draft on the same unseen traces.

        The most recent ``max_traces`` of ``fresh`` (traces on probation, read since the last candidate
        and trained on by no draft yet) and the held-out ones, whatever their domain: after a shift the
        candidate is judged on the traffic it will serve, not on a domain that no longer arrives. Per
        domain: both pooled means, the trace count, the paired 95 % interval of the per-trace difference
        (``diff_low``, ``diff_high``) and the domain's ``weight``, its share of the traffic read since
        the last candidate (:func:`traffic_weights`). ``all``, which the approval policy judges by,
        weighs each domain so (:func:`traffic_weighted_diff`): the candidate must be better beyond
        doubt on what is served now, not on a per-trace pool in which older held-out traces of a domain
        that stopped arriving dilute it.
        """
        paced, depth = self.pacer.paced, self.eval_depth
        records = self.heldout.for_evaluation(fresh, self.max_traces)
        draft = trainer.candidate()
        examples = [paced(self.examples.get, r, draft.vocab) for r in records]
        ours = paced(per_trace_counts, draft, trainer.embed, examples, depth)
        live_draft = self.live_draft(live) if live else None
        if live is None or live_draft is None:
            theirs = [(s, s) for _, s in ours]  # no draft: one token per target step
        else:
            theirs = self._live_counts(live, live_draft, records, examples, trainer.embed)
        candidate, baseline = pooled_acceptance(examples, ours), pooled_acceptance(examples, theirs)
        paired = paired_by_domain(examples, ours, theirs)
        domains = [example.domain for example in examples]
        weights = traffic_weights([record.domain for record in fresh], domains)
        result = {
            domain: {
                "candidate": value,
                "live": baseline.get(domain, 1.0),
                "traces": float(paired[domain].traces),
                "diff_low": paired[domain].low,
                "diff_high": paired[domain].high,
                "weight": weights.get(domain, 0.0),
            }
            for domain, value in candidate.items()
            if domain != "all"
        }
        overall = traffic_weighted_diff(domains, ours, theirs, weights)
        result["all"] = {
            "candidate": overall.candidate,
            "live": overall.live,
            "traces": float(overall.traces),
            "diff_low": overall.low,
            "diff_high": overall.high,
        }
        return result

    def _live_counts(
        self,
        live: str,
        live_draft: Eagle3Draft,
        records: list[TraceRecord],
        examples: list[Example],
        embed: torch.Tensor,
    ) -> list[tuple[int, int]]:
        """The live draft's counts per held-out trace, each computed once per live version: it does not
        change between candidates, and the held-out set moves by a few traces a round. Scored on the
        candidate's examples whatever the live draft's vocabulary: a score reads nothing of it
        (:func:`per_trace_counts`), so a remap between them costs no second build."""
        if self._live_scores[0] != live:
            self._live_scores = (live, {})
        known = self._live_scores[1]
        missing = [i for i, record in enumerate(records) if record.request_id not in known]
        if missing:
            fresh = [examples[i] for i in missing]
            counts = self.pacer.paced(per_trace_counts, live_draft, embed, fresh, self.eval_depth)
            known.update((records[i].request_id, c) for i, c in zip(missing, counts, strict=True))
        current = {record.request_id for record in records}
        for request_id in [r for r in known if r not in current]:
            del known[request_id]  # left the held-out window: never judged again
        return [known[record.request_id] for record in records]

    def coverage(self, vocab: DraftVocab) -> dict[str, float]:
        """Per domain, the share of held-out output tokens the draft's vocabulary can propose at all:
        the ceiling on its acceptance there, and the sign a new domain's tokens fall outside it."""
        outputs: dict[str, list[int]] = {}
        for record in self.heldout.records():
            outputs.setdefault(record.domain, []).extend(record.output_ids)
        return {domain: round(vocab.coverage(tokens), 4) for domain, tokens in sorted(outputs.items())}

    def publish(
        self,
        draft: Eagle3Draft,
        name: str,
        live: str | None,
        shadow: ShadowEval,
        metrics: dict[str, Any],
        window: dict[str, Any],
        vocab_version: int,
    ) -> UploadResult:
        """Upload ``draft`` as a candidate descending from ``live``; raises ``ControlPlaneError`` or
        ``OSError`` when it could not be published."""
        out = self.dir / name
        save_draft(
            draft,
            out,
            parent_version=live,
            extra={"training": metrics, "shadow_eval": shadow, "vocab_version": vocab_version},
        )
        try:
            return self.control.publish(out, live, shadow, metrics, window)
        finally:
            shutil.rmtree(out, ignore_errors=True)  # uploaded, or superseded by the next candidate

    def live_draft(self, version: str) -> Eagle3Draft | None:
        """The registered draft ``version``, fetched once and kept in memory; None when unusable."""
        if self._live is not None and self._live[0] == version:
            return self._live[1]
        directory = self.live_dir / version
        try:
            self.control.fetch_draft(version, directory)
            draft, _ = load_draft(directory)
            check_fits(draft, self.target)
        except (ControlPlaneError, DraftArtifactError, OSError) as exc:
            # Unusable (gone, corrupt, or made for another target): learn on without it.
            log.warning("live draft %s unavailable: %s", version, exc)
            return None
        finally:
            shutil.rmtree(directory, ignore_errors=True)  # kept in memory; files would pile up per version
        self._live = (version, draft)
        return draft


def check_fits(draft: Eagle3Draft, target: LlamaModel) -> None:
    """A draft trained for another target would fail every round: refuse it at load time."""
    config, spec = draft.config, target.spec
    if (config.hidden_size, config.target_vocab_size) != (spec.hidden_size, spec.vocab_size):
        raise DraftArtifactError(
            f"draft for hidden size {config.hidden_size} / vocabulary {config.target_vocab_size}, "
            f"target has {spec.hidden_size} / {spec.vocab_size}"
        )
