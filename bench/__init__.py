"""Benchmarks: run with `python -m bench.runtime` from the repository root."""
