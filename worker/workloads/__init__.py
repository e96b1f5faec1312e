"""Deterministic traffic domains (code, prose, chat, mixed) built from files every Python install has."""

from worker.workloads.prompts import DOMAINS, Prompt, build_prompts, encode_prompt

__all__ = ["DOMAINS", "Prompt", "build_prompts", "encode_prompt"]
