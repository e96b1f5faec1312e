"""Prompt construction for the inference worker: chat template and token limits."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from borealis.wire import GenerateRequest


class PromptRejected(ValueError):
    """The prompt is empty or, with the requested tokens, does not fit the model context."""


class PromptBuilder:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_context_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.max_context_tokens = max_context_tokens
        eos = tokenizer.eos_token_id
        self.stop_token_ids: tuple[int, ...] = (eos,) if isinstance(eos, int) else ()

    def decode(self, token_ids: list[int]) -> str:
        return str(self.tokenizer.decode(token_ids, skip_special_tokens=True))

    @classmethod
    def from_model_dir(cls, model_dir: Path, max_context_tokens: int) -> PromptBuilder:
        return cls(AutoTokenizer.from_pretrained(model_dir), max_context_tokens)

    def prompt_ids(self, request: GenerateRequest) -> list[int]:
        """Token ids of the prompt; chat turns go through the tokenizer's own chat template."""
        if request.messages is not None:
            turns = [turn.model_dump() for turn in request.messages]
            text = self.tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
        else:
            text = request.prompt or ""
        ids: list[int] = self.tokenizer(str(text), add_special_tokens=False)["input_ids"]
        if not ids:
            raise PromptRejected("the prompt is empty after tokenization")
        if len(ids) + request.max_tokens > self.max_context_tokens:
            raise PromptRejected(
                f"prompt ({len(ids)} tokens) plus max_tokens ({request.max_tokens}) exceeds the "
                f"model context of {self.max_context_tokens} tokens"
            )
        return ids
