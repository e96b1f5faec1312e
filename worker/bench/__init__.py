"""Benchmarks run from the CLI (numbers come from here, never from timed tests)."""
