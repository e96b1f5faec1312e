"""SGLang's meta_info as Borealis statistics, and per-step acceptance rebuilt from streamed chunks.

Fixtures are final ``meta_info`` dictionaries in the shape SGLang 0.5.23's TokenizerManager builds
(keys and meanings read from its source); no SGLang process runs here.
"""

from __future__ import annotations

from worker.sglang.stats import reconstruct_steps, spec_stats, step_traces

# 10 completion tokens: 1 from prefill, then steps committing 3, 1, 4, 1 (accepted 2, 0, 3, 0)
META = {
    "completion_tokens": 10,
    "spec_verify_ct": 4,
    "spec_num_correct_drafts": 5,
    "spec_num_proposed_drafts": 4 * 3,
    "spec_accept_length": 10 / 4,
    "spec_correct_drafts_histogram": [2, 0, 1, 1],
}


def test_meta_info_maps_onto_spec_stats_with_the_cpu_engines_convention() -> None:
    stats = spec_stats(META, decode_seconds=0.5)
    assert (stats.num_steps, stats.num_drafts, stats.num_draft_tokens) == (4, 4, 12)
    assert stats.num_accepted_tokens == 5 and stats.accepted_from_draft == 5
    assert stats.accepted_from_ngram == 0
    assert stats.mean_acceptance_length == (5 + 4) / 4  # per verify step; SGLang's 2.5 counts prefill
    assert stats.accepted_per_position == [2, 2, 1]  # steps that accepted at least 1, 2, 3 drafts
    assert sum(stats.accepted_per_position) == stats.num_accepted_tokens
    assert stats.decode_seconds == 0.5
    assert spec_stats({"completion_tokens": 4}).num_steps == 0  # not speculated


def test_one_chunk_per_step_reconstructs_exactly() -> None:
    steps = reconstruct_steps([1, 3, 1, 4, 1], META)
    assert steps.accepted == [2, 0, 3, 0] and steps.exact and not steps.truncated_last


def test_the_prefill_token_may_share_the_first_chunk_with_the_first_step() -> None:
    assert reconstruct_steps([4, 1, 4, 1], META).accepted == [2, 0, 3, 0]


def test_coalesced_chunks_are_not_exact() -> None:
    steps = reconstruct_steps([1, 4, 4, 1], META)  # steps 1 and 2 arrived together
    assert not steps.exact and len(steps.accepted) == 3


def test_a_last_step_cut_by_a_stop_takes_the_histograms_value() -> None:
    # the last step accepted 2 drafts, but the stop string ended the output after 2 of its 3 tokens
    meta = {**META, "spec_correct_drafts_histogram": [1, 0, 2, 1], "spec_num_correct_drafts": 7}
    steps = reconstruct_steps([1, 3, 4, 1, 2], meta)
    assert steps.accepted == [2, 3, 0, 2] and steps.exact and steps.truncated_last
    # a step that shows more tokens than the histogram allows is not explained by a cut
    assert not reconstruct_steps([1, 3, 1, 1, 4], meta).exact


def test_disagreeing_histograms_are_never_called_exact() -> None:
    assert not reconstruct_steps([1, 2, 2, 2, 2], META).exact  # four steps of 1, histogram says otherwise
    assert not reconstruct_steps([1, 3, 1, 4, 1], {**META, "spec_correct_drafts_histogram": []}).exact
    assert not reconstruct_steps([], META).exact


def test_exact_steps_become_accepted_chains_after_the_prefill_token() -> None:
    output = list(range(100, 110))  # 1 prefill token, then steps committing 3, 1, 4, 1
    traces = step_traces(output, reconstruct_steps([1, 3, 1, 4, 1], META))
    assert [t.position for t in traces] == [1, 4, 5, 9]
    assert [t.tokens for t in traces] == [(101, 102), (), (105, 106, 107), ()]
    assert traces[2].parents == (-1, 0, 1) and traces[2].accepted == 3
    assert step_traces(output, reconstruct_steps([1, 4, 4, 1], META)) == ()  # not exact: no steps
