"""The ``--through-api`` arm of ``bench speedup``: the same prompts and draft, served by a private appliance.

What a user gets: control plane, inference worker and Redis as separate processes, requests through
the OpenAI API one at a time, timed at the client from send to the last byte (prefill included, as
the in-process arms are). The arm's draft is the in-process arm's, published and approved first.
Each round runs the in-process speculative arm again just before the API one (the appliance idles
meanwhile), and the ratio is of those paired runs: on a VM whose memory bandwidth switched between
about 45 and 80 GB/s minutes apart, an in-process figure from before the appliance started made the
API look 0.76-0.85x as fast, where paired runs of the worker decoded as fast as the engine in-process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from borealis.control_client import ControlPlaneClient
from borealis.settings import get_settings
from worker.bench.appliance import private_appliance, wait_for_version
from worker.bench.clients import Request, prompt_request
from worker.draft.io import save_draft
from worker.draft.model import Eagle3Draft
from worker.workloads import Prompt


def completion_text(request: Request, body: dict[str, Any]) -> str:
    choice = body["choices"][0]
    return str(choice["message"]["content"] if request.path.endswith("chat/completions") else choice["text"])


@dataclass(frozen=True)
class ServedDraft:
    base_url: str
    model: str  # the id /v1/models serves
    version: str  # the draft version every worker runs


@contextmanager
def serving_draft(draft: Eagle3Draft, extra_env: dict[str, str], trainer: bool) -> Iterator[ServedDraft]:
    """A private appliance whose workers all run ``draft`` (published and approved first)."""
    settings = get_settings()
    env = {"BOREALIS_AUTO_ROLLBACK": "false", **extra_env}
    with private_appliance(settings, trainer=trainer, extra_env=env) as appliance:
        admin = appliance.admin_client()
        admin.put("/api/policy", json={"mode": "manual", "reason": "bench speedup"}).raise_for_status()
        artifact = Path(appliance.home) / "bench-draft"
        save_draft(draft, artifact)
        version = (
            ControlPlaneClient(appliance.base_url, appliance.cluster_token)
            .publish(artifact, source="upload")
            .version
        )
        admin.post(f"/api/drafts/{version}/approve", json={"reason": "bench speedup"}).raise_for_status()
        wait_for_version(admin, version)
        model = admin.get("/v1/models").json()["data"][0]["id"]
        yield ServedDraft(appliance.base_url, model, version)


def run_api_arm(
    prompts: list[Prompt],
    draft: Eagle3Draft,
    max_new_tokens: int,
    extra_env: dict[str, str],
    trainer: bool,
    in_process: Callable[[], tuple[float, float]],
    rounds: int,
) -> dict[str, Any]:
    """Tokens per second through the API (the last round's per request, the mean of the rounds') and each
    request's completion text, ``rounds`` times after a run of ``in_process`` (its tokens per second, and
    the engine's prefill and decoding seconds per request): the API's ratio to it, of the rounds' means
    and per round."""
    with serving_draft(draft, extra_env, trainer) as served:
        engine, engine_seconds, api = [], [], []
        for _ in range(rounds):
            speed, seconds = in_process()
            engine.append(speed)
            engine_seconds.append(round(seconds, 4))
            timed = time_completions(served.base_url, served.model, prompts, max_new_tokens)
            api.append(timed["tok_s"])
    return {
        **timed,
        "tok_s": sum(api) / rounds,
        "tok_s_per_round": api,
        "in_process_spec_tok_s_per_round": engine,
        "in_process_engine_seconds_per_request_per_round": engine_seconds,
        "over_in_process_spec": sum(api) / sum(engine),
        "over_in_process_spec_per_round": [a / e for a, e in zip(api, engine, strict=True)],
        "rounds": rounds,
        "trainer": trainer,
        "draft_version": served.version,
    }


def time_completions(base_url: str, model: str, prompts: list[Prompt], max_new_tokens: int) -> dict[str, Any]:
    """Greedy requests one at a time, each timed at the client from send to the last byte.

    Any OpenAI-compatible server: ``bench peer`` times llama.cpp's server with it too.
    """
    texts, tokens, seconds, worker = [], [], [], []
    with httpx.Client(base_url=base_url, timeout=600) as client:
        warm = prompt_request(model, prompts[0], 8)
        client.post(warm.path, json=warm.body).raise_for_status()
        for prompt in prompts:
            request = prompt_request(model, prompt, max_new_tokens)
            started = time.perf_counter()
            response = client.post(request.path, json=request.body)
            seconds.append(time.perf_counter() - started)
            response.raise_for_status()
            reply = response.json()
            texts.append(completion_text(request, reply))
            tokens.append(int(reply["usage"]["completion_tokens"]))
            spec = reply.get("spec_decode") or {}
            if "prefill_seconds" in spec:
                worker.append(spec["prefill_seconds"] + spec["decode_seconds"])
    timed: dict[str, Any] = {
        "tok_s": sum(tokens) / sum(seconds),
        "per_request_tok_s": [round(t / s, 2) for t, s in zip(tokens, seconds, strict=True)],
        "generated_tokens": sum(tokens),
        "texts": texts,
    }
    if len(worker) == len(seconds):  # a Borealis worker: where a request's time went
        timed["worker_seconds_per_request"] = round(sum(worker) / len(worker), 4)
        timed["outside_worker_seconds_per_request"] = round((sum(seconds) - sum(worker)) / len(worker), 4)
    return timed
