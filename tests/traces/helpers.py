"""Builders for trace records and a toy tokenizer over real code and prose text."""

from __future__ import annotations

import inspect
import random
import re
import zlib

from borealis.wire import TraceRecord, TraceStep

_WORD = re.compile(r"\w+|[^\w\s]|\n")


def make_record(
    request_id: str = "req-1",
    *,
    domain: str = "code",
    prompt_ids: list[int] | None = None,
    output_ids: list[int] | None = None,
    finished_at: float = 1_700_000_000.0,
    accepted: int = 1,
) -> TraceRecord:
    """A valid record: one two-token chain proposal per output token pair, ``accepted`` kept each step."""
    output = output_ids if output_ids is not None else [11, 12, 13, 14, 15, 16]
    steps = [
        TraceStep(position=p, proposed=[7, 8], draft_probs=[0.9, 0.4], accepted=accepted)
        for p in range(0, len(output), 2)
    ]
    return TraceRecord(
        request_id=request_id,
        model="tiny",
        draft_version="v1",
        domain=domain,
        domain_source="request",
        started_at=finished_at - 1.0,
        finished_at=finished_at,
        finish_reason="length",
        prompt_ids=prompt_ids if prompt_ids is not None else [1, 2, 3],
        output_ids=output,
        steps=steps,
    )


def toy_ids(text: str) -> list[int]:
    """Words and symbols hashed into a SmolLM2-sized vocabulary: a stand-in for a BPE tokenizer."""
    return [zlib.crc32(word.encode()) % 49_152 for word in _WORD.findall(text)]


def request_chunks(ids: list[int], size: int, seed: int) -> list[list[int]]:
    """Cut a token stream into request-sized pieces in shuffled order: stationary traffic."""
    chunks = [ids[i : i + size] for i in range(0, len(ids) - size + 1, size)]
    random.Random(seed).shuffle(chunks)
    return chunks


def code_text() -> str:
    import argparse
    import csv
    import dataclasses
    import enum
    import json.decoder
    import textwrap

    return "".join(inspect.getsource(m) for m in (argparse, csv, dataclasses, enum, json.decoder, textwrap))


def prose_text() -> str:
    """The language reference's topic texts that ship with CPython (pydoc's help pages)."""
    from pydoc_data.topics import topics

    return " ".join(topics.values())
