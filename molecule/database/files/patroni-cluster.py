#!/usr/bin/env python3
"""Print the Patroni cluster (GET /cluster) from the first of the given REST APIs that
answers; exit 1 when none does. The drills ask through it while members come and go.

  patroni-cluster http://10.0.0.31:8008 http://10.0.0.32:8008
"""

from __future__ import annotations

import sys
import urllib.request

for api in sys.argv[1:]:
    try:
        with urllib.request.urlopen(f"{api}/cluster", timeout=2) as response:  # noqa: S310
            print(response.read().decode())
            sys.exit(0)
    except OSError:
        continue
sys.exit(1)
