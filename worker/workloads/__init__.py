"""Deterministic traffic: code, prose, chat (and mixed) from the standard library, and HumanEval."""

from worker.workloads.prompts import DOMAINS, WORKLOADS, Prompt, build_prompts, encode_prompt

__all__ = ["DOMAINS", "WORKLOADS", "Prompt", "build_prompts", "encode_prompt"]
