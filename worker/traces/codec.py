"""How a trace record is laid out in a stream entry, and why a payload is refused.

Producer and consumer both go through here, so the entry layout is defined once. Decoding never
raises: a bad payload becomes a ``Rejection`` whose reason is counted and dead-lettered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from borealis.wire import TraceRecord

PAYLOAD_FIELD = b"record"
VERSION_FIELDS = frozenset({"wire_version", "trace_version"})

RejectReason = Literal[
    "oversized", "missing_payload", "bad_json", "wrong_version", "schema", "max_deliveries", "foreign_tokens"
]


@dataclass(frozen=True)
class Rejection:
    reason: RejectReason
    detail: str


def encode(record: TraceRecord) -> bytes:
    return record.model_dump_json(exclude_none=True).encode()


def decode(fields: dict[bytes, bytes] | None, max_bytes: int) -> TraceRecord | Rejection:
    """Check size before parsing, so an oversized payload costs no parse."""
    payload = (fields or {}).get(PAYLOAD_FIELD)
    if payload is None:
        return Rejection("missing_payload", f"no {PAYLOAD_FIELD.decode()} field")
    if len(payload) > max_bytes:
        return Rejection("oversized", f"{len(payload)} bytes > {max_bytes}")
    try:
        return TraceRecord.model_validate_json(payload)
    except ValidationError as exc:
        return _classify(exc)


def _classify(exc: ValidationError) -> Rejection:
    errors = exc.errors(include_url=False, include_input=False)
    detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in errors[:5])
    if any(e["type"] == "json_invalid" for e in errors):
        return Rejection("bad_json", detail)
    if any(e["loc"] and e["loc"][0] in VERSION_FIELDS for e in errors):
        return Rejection("wrong_version", detail)
    return Rejection("schema", detail)
