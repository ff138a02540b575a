"""Benchmarks: scripts that print numbers (run with `.venv/bin/python -m bench.<name>`)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def run(main: Callable[[], int]) -> None:
    """Run a benchmark's main, print how long it took and exit with its status."""
    started = time.monotonic()
    status = main()
    print(f"({time.monotonic() - started:.0f} s)")
    sys.exit(status)
