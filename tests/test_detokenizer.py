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


def _counting(tokenizer):  # type: ignore[no-untyped-def]
    """A decoder that counts the tokens it was given, over all calls."""
    decoded = [0]

    def decode(ids: list[int]) -> str:
        decoded[0] += len(ids)
        return str(tokenizer.decode(ids, skip_special_tokens=True))

    return decode, decoded


def test_long_stream_decodes_a_bounded_window_per_push(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """Work per push stays bounded (decoding the whole output every step was quadratic), and the text
    is still exactly the whole output's, pushed one to five tokens at a time."""
    text = TEXT * 60
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decode, decoded = _counting(tokenizer)
    stream = StopStringStream(decode, ["never appears"])
    deltas, at = [], 0
    while at < len(ids):
        size = 1 + at % 5
        deltas.append(stream.push(ids[at : at + size]))
        at += size
    deltas.append(stream.flush())
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True) == text
    assert len(ids) > 1500
    assert decoded[0] < 12 * len(ids)


def test_stop_string_split_across_pushes_in_a_long_stream(tokenizer) -> None:  # type: ignore[no-untyped-def]
    ids = tokenizer(TEXT * 20 + "THE END here", add_special_tokens=False)["input_ids"]
    stream = StopStringStream(_decoder(tokenizer), ["THE END"])
    deltas = [stream.push([token]) for token in ids]
    assert stream.stopped
    assert "".join(deltas) == TEXT * 20


def test_invalid_bytes_are_released_not_held_forever(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """A model may emit byte tokens that never form a character: the window is released (with
    replacement characters) rather than growing, so each push still decodes a bounded window."""
    stray = [i for i in range(tokenizer.vocab_size) if tokenizer.decode([i]) == "\ufffd"]
    assert stray
    ids = [stray[0]] * 400 + tokenizer("ok", add_special_tokens=False)["input_ids"]
    decode, decoded = _counting(tokenizer)
    stream = StopStringStream(decode, [])
    released = "".join(stream.push([token]) for token in ids) + stream.flush()
    assert released.endswith("ok")
    assert released.count("\ufffd") > 0
    assert decoded[0] < 40 * len(ids)
