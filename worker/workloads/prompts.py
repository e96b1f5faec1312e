"""Prompt sets per domain with stable train/test splits.

* code: the head of a standard-library function (signature, docstring, first lines); the model
  continues the code.
* prose: the opening of a module or class docstring; the model continues the text.
* chat: an instruction about a standard-library function, in the model's chat template.
* humaneval: a HumanEval problem's prompt (signature and docstring), labelled domain ``code``:
  public code the standard-library workloads do not contain.

The split of an item is a hash of its identity (module and qualified name), so it does not move
when other items are added, and the same function never lands in both splits.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from worker.workloads.humaneval import problems

Split = Literal["train", "test"]
DOMAINS = ("code", "prose", "chat")
WORKLOADS = (*DOMAINS, "humaneval")  # a workload is a prompt source; its prompts carry a domain label
TEST_FRACTION_PERCENT = 20
MAX_CODE_LINES = 14
MAX_PROSE_CHARS = 600
MAX_CHAT_CODE_LINES = 30


@dataclass(frozen=True)
class Prompt:
    domain: str
    key: str  # module:qualname, the identity the split is derived from
    text: str
    chat: bool  # format with the tokenizer's chat template


def split_of(key: str) -> Split:
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100
    return "test" if bucket < TEST_FRACTION_PERCENT else "train"


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(path for path in root.glob("*.py") if not path.name.startswith("_"))


def _definitions(path: Path) -> Iterator[tuple[str, ast.AST, list[str]]]:
    try:
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return
    lines = source.splitlines()
    yield path.stem, tree, lines
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            yield f"{path.stem}:{node.name}", node, lines
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("__"):
                    yield f"{path.stem}:{node.name}.{item.name}", item, lines
        elif isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            yield f"{path.stem}:{node.name}", node, lines


def _code_head(node: ast.AST, lines: list[str], max_lines: int) -> str | None:
    if not isinstance(node, ast.FunctionDef) or node.end_lineno is None:
        return None
    body = lines[node.lineno - 1 : node.end_lineno]
    if len(body) < 8:
        return None
    indent = len(body[0]) - len(body[0].lstrip())
    return "\n".join(line[indent:] for line in body[:max_lines]) + "\n"


@functools.lru_cache(maxsize=len(WORKLOADS))
def _all_items(workload: str) -> tuple[Prompt, ...]:
    """Parsing the standard library takes seconds: do it once per workload and process."""
    if workload == "humaneval":
        return tuple(Prompt("code", f"humaneval:{task}", text, chat=False) for task, text in problems())
    return tuple(_items(workload))


def _items(domain: str) -> Iterator[Prompt]:
    for path in stdlib_files():
        for key, node, lines in _definitions(path):
            if domain == "code":
                head = _code_head(node, lines, MAX_CODE_LINES)
                if head:
                    yield Prompt("code", key, head, chat=False)
            elif domain == "prose":
                doc = ast.get_docstring(node) if isinstance(node, ast.Module | ast.ClassDef) else None
                if doc and len(doc) > 200:
                    cut = doc[:MAX_PROSE_CHARS]
                    yield Prompt("prose", key, cut[: cut.rfind(" ")], chat=False)
            elif domain == "chat":
                code = _code_head(node, lines, MAX_CHAT_CODE_LINES)
                if code:
                    name = key.split(":", 1)[1]
                    module = key.split(":", 1)[0]
                    text = _chat_instruction(len(key), module, name, code)
                    yield Prompt("chat", key, text, chat=True)


def _chat_instruction(choice: int, module: str, name: str, code: str) -> str:
    asks = (
        f"Explain what `{name}` from the Python module `{module}` does, step by step.",
        f"Write a short docstring for `{name}` (module `{module}`) and list its edge cases.",
        f"How would you test `{name}` from `{module}`? Suggest three unit tests.",
    )
    return f"{asks[choice % len(asks)]}\n\n```python\n{code}```"


def build_prompts(domain: str, split: Split, limit: int | None = None) -> list[Prompt]:
    """Prompts of one workload (or ``mixed``: code, prose, chat interleaved) in a fixed order."""
    if domain == "mixed":
        per = [build_prompts(d, split, None if limit is None else -(-limit // len(DOMAINS))) for d in DOMAINS]
        mixed = [p for group in zip(*per, strict=False) for p in group]
        return mixed[:limit] if limit is not None else mixed
    if domain not in WORKLOADS:
        raise ValueError(f"unknown workload {domain!r}; choose from {(*WORKLOADS, 'mixed')}")
    chosen = [p for p in _all_items(domain) if split_of(p.key) == split]
    chosen.sort(key=lambda p: hashlib.sha256(p.key.encode()).hexdigest())
    return chosen[:limit] if limit is not None else chosen


def encode_prompt(prompt: Prompt, tokenizer: Any, max_tokens: int = 1024) -> list[int]:
    """Token ids of a prompt (chat ones through the chat template), keeping the last ``max_tokens``."""
    if prompt.chat:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt.text}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
    else:
        ids = tokenizer(prompt.text)["input_ids"]
    return list(ids)[-max_tokens:]
