"""The trace record contract: bounded, versioned, and both trace modes survive the codec."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from borealis.wire import (
    MAX_PROPOSED_PER_STEP,
    MAX_TRACE_OUTPUT_TOKENS,
    TraceRecord,
    TraceStep,
)
from tests.traces.helpers import make_record
from worker.traces.codec import PAYLOAD_FIELD, Rejection, decode, encode


def test_ids_only_record_round_trips_and_reports_acceptance() -> None:
    record = make_record(output_ids=[5, 6, 7, 8], accepted=2)
    decoded = decode({PAYLOAD_FIELD: encode(record)}, max_bytes=1 << 20)
    assert decoded == record
    assert record.mean_acceptance_length == 3.0  # two accepted + the target's token per step


def test_tree_steps_need_consistent_parents_and_acceptance() -> None:
    TraceStep(position=0, proposed=[1, 2, 3], draft_probs=[0.5, 0.3, 0.9], parents=[-1, -1, 0], accepted=2)
    with pytest.raises(ValidationError, match="earlier node"):
        TraceStep(position=0, proposed=[1, 2], draft_probs=[0.5, 0.3], parents=[-1, 1])
    with pytest.raises(ValidationError, match="one probability"):
        TraceStep(position=0, proposed=[1, 2], draft_probs=[0.5])
    with pytest.raises(ValidationError, match="accepted exceeds"):
        TraceStep(position=0, proposed=[1], draft_probs=[0.5], accepted=2)
    with pytest.raises(ValidationError, match="positions"):
        TraceRecord.model_validate(
            {**make_record(output_ids=[1, 2]).model_dump(), "steps": [{"position": 2}]}
        )


def test_every_list_is_bounded() -> None:
    base = make_record().model_dump()
    with pytest.raises(ValidationError, match="output_ids"):
        TraceRecord.model_validate({**base, "output_ids": [1] * (MAX_TRACE_OUTPUT_TOKENS + 1), "steps": []})
    too_many = list(range(MAX_PROPOSED_PER_STEP + 1))
    with pytest.raises(ValidationError, match="proposed"):
        TraceStep(position=0, proposed=too_many, draft_probs=[0.1] * len(too_many))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "bad_json"),
        (b'{"wire_version": 1, "request_id": "x"}', "schema"),
        (b"[1, 2, 3]", "schema"),
    ],
)
def test_malformed_payloads_are_classified(payload: bytes, reason: str) -> None:
    decoded = decode({PAYLOAD_FIELD: payload}, max_bytes=1 << 20)
    assert isinstance(decoded, Rejection) and decoded.reason == reason


@pytest.mark.parametrize("field", ["wire_version", "trace_version"])
def test_other_versions_are_refused(field: str) -> None:
    future = json.dumps(make_record().model_dump() | {field: 2}).encode()
    decoded = decode({PAYLOAD_FIELD: future}, 1 << 20)
    assert isinstance(decoded, Rejection) and decoded.reason == "wrong_version"


def test_oversized_or_missing_payloads_are_refused() -> None:
    payload = encode(make_record())
    decoded = decode({PAYLOAD_FIELD: payload}, max_bytes=len(payload) - 1)
    assert isinstance(decoded, Rejection) and decoded.reason == "oversized"
    assert decode({b"other": payload}, 1 << 20) == Rejection("missing_payload", "no record field")
