"""Benchmarks: scripts that print numbers (run with `uv run python -m bench.<name>`)."""
