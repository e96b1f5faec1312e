"""``borealis draft train``: a static draft trained offline on the target's own outputs.

Generation and training interleave under one time budget (``--gen-fraction`` of it generating), so
the draft starts learning from the first batch and sees more data the longer it runs. A new draft's
vocabulary is chosen from the target's outputs on the first ``--vocab-prompts`` prompts (each domain
weighted equally), as the online trainer chooses it: the head only ever proposes what the target says.
The artifact's manifest carries the training metrics and the simulated acceptance on the workload's
test split. Outputs and features come from the target in bf16 where the engine's kernels serve it (what
a bf16 worker ships the online trainer), the examples' logits from its float32 head.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from borealis.cpu import bf16_native
from borealis.settings import get_settings
from borealis.wire import TraceRecord
from worker.draft.examples import Example, example_from_features, example_from_record
from worker.draft.generate import greedy_continuations
from worker.draft.io import load_draft, save_draft
from worker.draft.model import new_draft
from worker.draft.shadow import simulated_acceptance
from worker.draft.trainer import DraftTrainer, TrainConfig, batches
from worker.draft.vocab import DraftVocab
from worker.engine import native
from worker.engine.llama import LlamaModel
from worker.workloads import Prompt, build_prompts, encode_prompt

# The saved draft averages the weights: 15-minute code drafts, paired on 48 test prompts, +0.064 simulated
# acceptance (95 % 0.004-0.129) over the last weights (docs/benchmarks.md, "A trained draft that pays").
OFFLINE_AVERAGE = 0.95


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="borealis draft train", description=__doc__)
    parser.add_argument("--workload", choices=["code", "prose", "chat", "mixed"], default="code")
    parser.add_argument("--minutes", type=float, required=True, help="training budget (generation included)")
    parser.add_argument("--out", required=True, help="artifact directory to write")
    parser.add_argument("--model", default=None, help="HF model directory (default: the configured model)")
    parser.add_argument("--init", default=None, help="start from this draft artifact")
    parser.add_argument("--traces", default=None, help="JSONL trace records to train on")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--max-prompt-tokens", type=int, default=384)
    parser.add_argument("--gen-batch", type=int, default=8)
    parser.add_argument("--gen-fraction", type=float, default=0.5)
    parser.add_argument(
        "--gen-dtype",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="the target's dtype generating outputs and features (auto: bfloat16 where the engine's kernels"
        " serve it, 2.4-2.6x the tokens per second of float32 here); its logits stay float32",
    )
    parser.add_argument("--draft-vocab", type=int, default=get_settings().draft_vocab_size)
    parser.add_argument(
        "--vocab-prompts", type=int, default=32, help="prompts whose outputs choose a new draft's vocabulary"
    )
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--ttt-steps", type=int, default=TrainConfig.ttt_steps)
    parser.add_argument("--rejected-weight", type=float, default=TrainConfig.rejected_weight)
    parser.add_argument("--batch-tokens", type=int, default=TrainConfig.batch_tokens)
    parser.add_argument("--warmup-steps", type=int, default=TrainConfig.warmup_steps)
    parser.add_argument(
        "--average",
        type=float,
        default=OFFLINE_AVERAGE,
        help="> 0: the saved draft is a moving average of the weights, this decay (0: the last weights)",
    )
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast (default: BOREALIS_TRAINER_BF16, auto: on where the CPU computes bf16 natively)",
    )
    parser.add_argument("--eval-requests", type=int, default=8, help="test-split prompts for the final eval")
    parser.add_argument("--eval-depth", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.minutes <= 0 or not 0.0 < args.gen_fraction < 1.0:
        parser.error("--minutes must be positive and --gen-fraction in (0, 1)")
    if args.bf16 and not bf16_native():
        # emulated bf16 matmuls measured 30x slower than fp32 on such a CPU (93 s vs 2.7 s a step)
        parser.error("--bf16 needs a CPU that computes bf16 natively (AVX512-BF16 or AMX); this one does not")
    if args.bf16 is None:  # the online trainer's choice, so offline and online drafts train alike
        args.bf16 = get_settings().trainer.bf16
    return args


class _Data:
    """Examples generated so far; prompts are consumed in the workload's fixed order."""

    def __init__(
        self,
        targets: Targets,
        tokenizer: Any,
        vocab: DraftVocab,
        prompts: Iterator[Prompt],
        args: argparse.Namespace,
    ):
        self.targets, self.tokenizer, self.vocab, self.args = targets, tokenizer, vocab, args
        self.prompts = prompts
        self.examples: list[Example] = []
        self.exhausted = False

    def generate_batch(self) -> None:
        batch = [next(self.prompts, None) for _ in range(self.args.gen_batch)]
        prompts = [p for p in batch if p is not None]
        self.exhausted = len(prompts) < len(batch)
        self.examples += examples_for(self.targets, self.tokenizer, self.vocab, prompts, self.args)


@dataclass(frozen=True)
class Targets:
    """The target twice: ``exact`` (float32) for the trainer's embedding and the examples' logits,
    ``generating`` (possibly bf16, or the same model) for greedy outputs and the features they record."""

    exact: LlamaModel
    generating: LlamaModel


def load_targets(model_dir: Path, gen_dtype: str) -> Targets:
    exact = LlamaModel.load(model_dir)
    bf16 = gen_dtype == "bfloat16" or (gen_dtype == "auto" and native.serves(torch.bfloat16))
    return Targets(exact, LlamaModel.load(model_dir, dtype=torch.bfloat16) if bf16 else exact)


@dataclass(frozen=True)
class Generated:
    prompt: Prompt
    ids: list[int]  # the prompt's token ids
    output: list[int]  # the target's greedy output
    features: torch.Tensor  # [N, 4H] what the generating target read: features and final hidden states


def generate(
    target: LlamaModel, tokenizer: Any, prompts: list[Prompt], args: argparse.Namespace
) -> list[Generated]:
    ids = [encode_prompt(p, tokenizer, args.max_prompt_tokens) for p in prompts]
    eos = (tokenizer.eos_token_id,) if tokenizer.eos_token_id is not None else ()
    made = greedy_continuations(target, ids, args.max_new_tokens, args.gen_batch, eos, features=True)
    return [
        Generated(prompt, p, c.output, c.features)
        for prompt, p, c in zip(prompts, ids, made, strict=True)
        if c.output and c.features is not None
    ]


def build_examples(targets: Targets, vocab: DraftVocab, generated: list[Generated]) -> list[Example]:
    """From the features generation recorded (the generating target's, as a worker ships them): only
    the exact target's head runs. A prefill per sequence cost as much as generating it (2.4 s against
    2.3-2.5 s for 8 code prompts of 128 tokens, bf16)."""
    return [
        example_from_features(targets.exact, vocab, g.ids + g.output, g.features, len(g.ids), g.prompt.domain)
        for g in generated
    ]


def examples_for(
    targets: Targets, tokenizer: Any, vocab: DraftVocab, prompts: list[Prompt], args: argparse.Namespace
) -> list[Example]:
    return build_examples(targets, vocab, generate(targets.generating, tokenizer, prompts, args))


def cycle_batches(examples: list[Example], batch_tokens: int, rng: random.Random) -> Iterator[list[Example]]:
    """Epochs over the current pool, reshuffled (and regrouped, as the pool grows) each time."""
    while True:
        groups = batches(examples, batch_tokens)
        rng.shuffle(groups)
        yield from groups


def train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        lr=args.lr,
        ttt_steps=args.ttt_steps,
        rejected_weight=args.rejected_weight,
        batch_tokens=args.batch_tokens,
        warmup_steps=args.warmup_steps,
        average=args.average,
        bf16=args.bf16,
    )


def read_traces(path: Path) -> list[TraceRecord]:
    return [TraceRecord.model_validate_json(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = get_settings()
    torch.set_num_threads(args.threads or settings.threads)
    torch.manual_seed(args.seed)
    from transformers import AutoTokenizer

    model_dir = Path(args.model) if args.model else settings.resolved_model_path
    native.enable(settings.native_kernels, settings.native_amx)  # as a worker would
    targets = load_targets(model_dir, args.gen_dtype)
    target = targets.exact
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    started = time.monotonic()
    deadline = started + args.minutes * 60
    train_prompts = build_prompts(args.workload, "train")
    prompts = iter(train_prompts)
    records = read_traces(Path(args.traces)) if args.traces else []
    first: list[Generated] = []
    if args.init:
        draft, _ = load_draft(args.init)
    else:
        if args.traces:
            outputs = [(r.domain, r.output_ids) for r in records]
            context = [r.prompt_ids for r in records]
        else:
            first = generate(
                targets.generating, tokenizer, list(itertools.islice(prompts, args.vocab_prompts)), args
            )
            outputs = [(g.prompt.domain, g.output) for g in first]
            context = [encode_prompt(p, tokenizer, args.max_prompt_tokens) for p in train_prompts]
        vocab = DraftVocab.from_outputs(outputs, args.draft_vocab, target.spec.vocab_size, context)
        draft = new_draft(target.spec, vocab, args.seed)
    generating = time.monotonic() - started
    trainer = DraftTrainer(draft, target.embed, train_config(args))
    rng = random.Random(args.seed)
    data = _Data(targets, tokenizer, draft.vocab, prompts, args)
    data.examples = build_examples(targets, draft.vocab, first)  # the vocabulary's outputs train too
    if args.traces:
        data.examples = [example_from_record(target, draft.vocab, r) for r in records]
        data.exhausted = True
    stream = cycle_batches(data.examples, args.batch_tokens, rng)
    history = []
    # The budget, and at least one optimizer step once there is data (a tiny budget still trains).
    while (time.monotonic() < deadline or not trainer.steps_done) and (data.examples or not data.exhausted):
        if not data.exhausted and generating <= args.gen_fraction * (time.monotonic() - started):
            t0 = time.monotonic()
            data.generate_batch()
            generating += time.monotonic() - t0
            stream = cycle_batches(data.examples, args.batch_tokens, rng)
        elif data.examples:
            history.append(trainer.train_step(next(stream)))
    held_out = examples_for(
        targets, tokenizer, draft.vocab, build_prompts(args.workload, "test", args.eval_requests), args
    )
    trained = trainer.candidate()
    acceptance = simulated_acceptance(trained, trainer.embed, held_out, args.eval_depth)
    tail = history[-20:]
    top1 = [sum(m.top1[k] for m in tail) / len(tail) for k in range(args.ttt_steps)] if tail else []
    metrics = {
        "workload": args.workload,
        "minutes": args.minutes,
        "train_sequences": len(data.examples),
        "train_tokens": sum(len(e) for e in data.examples),
        "optimizer_steps": trainer.steps_done,
        "generation_seconds": round(generating, 1),
        "generation_dtype": str(targets.generating.dtype).removeprefix("torch."),
        "final_loss": sum(m.loss for m in tail) / len(tail) if tail else None,
        "final_top1": top1,
        "simulated_acceptance": acceptance,
        "eval_depth": args.eval_depth,
        "train_config": trainer.config.to_dict(),
        "source": "traces" if args.traces else "generated",
    }
    save_draft(trained, args.out, extra={"training": metrics})
    print(json.dumps(metrics, indent=2))
    return 0
