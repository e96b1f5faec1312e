"""Streamed text deltas concatenate to the final text and stop strings cut it exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from worker.inference.detokenizer import StopStringStream

TEXT = "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # café ☕ done"


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir: Path):  # type: ignore[no-untyped-def]
    return AutoTokenizer.from_pretrained(smollm2_dir)


def _decoder(tokenizer):  # type: ignore[no-untyped-def]
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True)


def _stream(tokenizer, stop: list[str]) -> tuple[list[str], StopStringStream]:  # type: ignore[no-untyped-def]
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    stream = StopStringStream(_decoder(tokenizer), stop)
    deltas = [stream.push([token]) for token in ids]
    deltas.append(stream.flush())
    return deltas, stream


def test_deltas_reassemble_the_text_including_multibyte(tokenizer) -> None:  # type: ignore[no-untyped-def]
    deltas, stream = _stream(tokenizer, [])
    assert "".join(deltas) == TEXT
    assert not stream.stopped
    assert all("\ufffd" not in d for d in deltas)


def test_stop_string_cuts_before_it_and_holds_back_partial_matches(tokenizer) -> None:  # type: ignore[no-untyped-def]
    deltas, stream = _stream(tokenizer, ["\n\nprint", "never"])
    assert "".join(deltas) == "def add(a, b):\n    return a + b"
    assert stream.stopped


def test_special_tokens_are_not_emitted(tokenizer) -> None:  # type: ignore[no-untyped-def]
    stream = StopStringStream(_decoder(tokenizer), [])
    ids = tokenizer("Hello", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert stream.push(ids) + stream.flush() == "Hello"
