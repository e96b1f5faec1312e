"""Operator views of the serving time series (the dashboard's figures)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from backend.services.serving_stats import Cell


class CellView(BaseModel):
    requests: int
    errors: int
    prompt_tokens: int
    generation_tokens: int
    tokens_per_s: float = Field(description="Generated tokens per second of wall time in the bucket.")
    mean_acceptance_length: float | None = Field(
        description="Tokens per target step over requests that speculated; null when none did."
    )
    accepted: int = Field(description="Accepted proposed tokens.")
    accepted_from_draft: int = Field(description="Accepted tokens the learned draft proposed.")
    accepted_from_ngram: int = Field(description="Accepted tokens n-gram lookup proposed.")
    draft_share_of_accepted: float | None = Field(
        description="Share of accepted tokens the learned draft proposed (a token n-gram lookup also "
        "proposed counts for both); null when nothing was accepted."
    )
    ngram_share_of_accepted: float | None = Field(
        description="Share of accepted tokens n-gram lookup proposed; null when nothing was accepted."
    )
    decode_seconds: float = Field(description="Decoding time of the bucket's requests (shared steps split).")
    target_only_seconds: float = Field(
        description="Workers' estimate of that time without speculation, from measured plain-step costs."
    )
    speedup_over_target_only: float | None = Field(
        description="target_only_seconds / decode_seconds; null when nothing was decoded."
    )

    @classmethod
    def of(cls, cell: Cell, seconds: float) -> CellView:
        return cls(
            requests=cell.requests,
            errors=cell.errors,
            prompt_tokens=cell.prompt_tokens,
            generation_tokens=cell.generation_tokens,
            tokens_per_s=round(cell.generation_tokens / seconds, 3),
            mean_acceptance_length=cell.mean_acceptance_length,
            accepted=cell.accepted,
            accepted_from_draft=cell.accepted_from_draft,
            accepted_from_ngram=cell.accepted_from_ngram,
            draft_share_of_accepted=cell.draft_share_of_accepted,
            ngram_share_of_accepted=cell.ngram_share_of_accepted,
            decode_seconds=round(cell.decode_seconds, 6),
            target_only_seconds=round(cell.target_only_seconds, 6),
            speedup_over_target_only=cell.speedup_over_target_only,
        )


class BucketView(CellView):
    start: float = Field(description="Bucket start, Unix seconds.")
    seconds: float = Field(description="Bucket length so far (the newest bucket is still filling).")
    by_version: dict[str, CellView]
    by_domain: dict[str, CellView]


class ServingSeries(BaseModel):
    bucket_seconds: float
    now: float
    buckets: list[BucketView]
