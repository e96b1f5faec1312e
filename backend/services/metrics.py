"""Prometheus metrics of the control plane, named like vLLM's so existing dashboards apply.

The control plane sees the final chunk of every request, including the worker's speculative
statistics, so serving metrics are counted here, labelled like vLLM's by ``model_name`` and
further by draft version and domain.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector

from borealis.wire import GenerateChunk

PREFIX = "borealis:"
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
ACCEPTANCE_BUCKETS = (1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0)


class ServingMetrics:
    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        self.model_name = model_name
        labels = ["model_name", "draft_version", "domain"]
        r = self.registry
        self.num_drafts = Counter(
            f"{PREFIX}spec_decode_num_drafts", "Verification steps with a proposal.", labels, registry=r
        )
        self.num_draft_tokens = Counter(
            f"{PREFIX}spec_decode_num_draft_tokens", "Proposed draft tokens.", labels, registry=r
        )
        self.num_accepted_tokens = Counter(
            f"{PREFIX}spec_decode_num_accepted_tokens", "Accepted draft tokens.", labels, registry=r
        )
        self.accepted_per_pos = Counter(
            f"{PREFIX}spec_decode_num_accepted_tokens_per_pos",
            "Accepted draft tokens by position in the proposal.",
            [*labels, "position"],
            registry=r,
        )
        self.accepted_by_source = Counter(
            f"{PREFIX}spec_decode_num_accepted_tokens_by_source",
            "Accepted draft tokens by proposer (draft, ngram); a token both proposed counts for both.",
            [*labels, "source"],
            registry=r,
        )
        self.num_steps = Counter(
            f"{PREFIX}spec_decode_num_target_steps", "Target forward passes.", labels, registry=r
        )
        self.decode_seconds = Counter(
            f"{PREFIX}spec_decode_decode_seconds",
            "Decoding time (each request's share of the batched steps it was in).",
            labels,
            registry=r,
        )
        self.target_only_seconds = Counter(
            f"{PREFIX}spec_decode_target_only_seconds",
            "Workers' estimate of the same decoding without speculation (measured plain-step cost).",
            labels,
            registry=r,
        )
        self.acceptance_length = Histogram(
            f"{PREFIX}spec_decode_acceptance_length",
            "Per-request tokens emitted per target step.",
            labels,
            buckets=ACCEPTANCE_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            f"{PREFIX}request_success", "Finished requests.", [*labels, "finished_reason"], registry=r
        )
        self.request_errors = Counter(
            f"{PREFIX}request_errors", "Requests that failed.", ["model_name", "status"], registry=r
        )
        self.prompt_tokens = Counter(f"{PREFIX}prompt_tokens", "Prompt tokens processed.", labels, registry=r)
        self.generation_tokens = Counter(
            f"{PREFIX}generation_tokens", "Tokens generated.", labels, registry=r
        )
        self.swaps = Counter(
            f"{PREFIX}swaps",
            "Draft swaps acknowledged by workers, by result (ok, failed).",
            ["model_name", "result"],
            registry=r,
        )
        self.swap_load_seconds = Histogram(
            f"{PREFIX}swap_load_seconds",
            "Seconds from a swap starting on a worker to its ack (fetch, verify, load, install).",
            ["model_name"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        ProcessCollector(registry=r)  # the control plane's own process_resident_memory_bytes, CPU
        self.e2e_latency = Histogram(
            f"{PREFIX}e2e_request_latency_seconds",
            "Request latency.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            f"{PREFIX}time_to_first_token_seconds",
            "Time to the first token.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.time_per_output_token = Histogram(
            f"{PREFIX}request_time_per_output_token_seconds",
            "Per request: mean seconds between output tokens after the first (vLLM's TPOT).",
            labels,
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.inter_token_latency = Histogram(
            f"{PREFIX}inter_token_latency_seconds",
            "Seconds between successive streamed chunks of a request (a chunk carries the verification "
            "steps of one stream interval, BOREALIS_STREAM_INTERVAL_MS; with 0, one step each, as vLLM v1 "
            "counts with speculation: a chunk may carry several tokens).",
            ["model_name"],
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            f"{PREFIX}request_queue_time_seconds",
            "Seconds a request waited in its worker for a batch slot before its prefill started.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def observe_chunk_gap(self, seconds: float) -> None:
        self.inter_token_latency.labels(model_name=self.model_name).observe(seconds)

    def observe_finished(
        self, chunk: GenerateChunk, domain: str | None, latency_s: float, ttft_s: float | None
    ) -> None:
        stats = chunk.spec_decode
        labels = {
            "model_name": self.model_name,
            "draft_version": (stats.draft_version if stats else None) or "none",
            "domain": domain or "unknown",
        }
        self.requests.labels(**labels, finished_reason=chunk.finish_reason or "unknown").inc()
        self.prompt_tokens.labels(**labels).inc(chunk.prompt_tokens or 0)
        self.generation_tokens.labels(**labels).inc(chunk.completion_tokens or 0)
        self.e2e_latency.labels(**labels).observe(latency_s)
        if ttft_s is not None:
            self.ttft.labels(**labels).observe(ttft_s)
            tokens = chunk.completion_tokens or 0
            if tokens > 1:
                self.time_per_output_token.labels(**labels).observe(
                    max(0.0, latency_s - ttft_s) / (tokens - 1)
                )
        if chunk.queue_seconds is not None:
            self.queue_time.labels(**labels).observe(chunk.queue_seconds)
        if stats is None or stats.num_steps == 0:
            return
        self.num_steps.labels(**labels).inc(stats.num_steps)
        self.decode_seconds.labels(**labels).inc(stats.decode_seconds)
        self.target_only_seconds.labels(**labels).inc(stats.target_only_seconds)
        self.num_drafts.labels(**labels).inc(stats.num_drafts)
        self.num_draft_tokens.labels(**labels).inc(stats.num_draft_tokens)
        self.num_accepted_tokens.labels(**labels).inc(stats.num_accepted_tokens)
        self.accepted_by_source.labels(**labels, source="draft").inc(stats.accepted_by_source.draft)
        self.accepted_by_source.labels(**labels, source="ngram").inc(stats.accepted_by_source.ngram)
        for position, accepted in enumerate(stats.accepted_per_position):
            if accepted:
                self.accepted_per_pos.labels(**labels, position=str(position)).inc(accepted)
        self.acceptance_length.labels(**labels).observe(stats.mean_acceptance_length)

    def observe_swap(self, ok: bool, load_seconds: float) -> None:
        self.swaps.labels(model_name=self.model_name, result="ok" if ok else "failed").inc()
        self.swap_load_seconds.labels(model_name=self.model_name).observe(load_seconds)

    def observe_error(self, status: int) -> None:
        self.request_errors.labels(model_name=self.model_name, status=str(status)).inc()
