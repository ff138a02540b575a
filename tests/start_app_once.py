"""Helper process for test_startup: start the app when told to, read once, exit.

Prints ``ready`` once imported, waits for a line on stdin, then runs the lifespan
(schema creation included) and ``GET /api/items``; exit status 0 means it all worked.
"""

from __future__ import annotations

import asyncio
import sys

import httpx
from asgi_lifespan import LifespanManager

from app.main import create_app


async def main() -> int:
    app = create_app()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://local") as client:
            response = await client.get("/api/items")
    print(response.status_code, response.text, flush=True)
    return 0 if response.status_code == 200 else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
