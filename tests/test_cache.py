"""Cache-aside on a real Valkey/Redis: hits, misses, invalidation, TTL, no keyspace scans."""

from __future__ import annotations

import asyncio
import json

from redis.asyncio import Redis

from app.core.settings import Settings
from devservers import CacheServer, PostgresServer
from tests.apps import Api, make_settings, running_app


async def create_item(api: Api, name: str) -> dict[str, object]:
    response = await api.client.post("/api/items", json={"name": name})
    assert response.status_code == 201
    return response.json()


async def test_item_miss_then_hit(api: Api, raw_cache: Redis) -> None:
    await create_item(api, "cached")
    assert await raw_cache.get("items:1") is None

    first = await api.client.get("/api/items/1")
    stored = await raw_cache.get("items:1")
    assert stored is not None
    assert json.loads(stored) == first.json()
    assert 0 < await raw_cache.ttl("items:1") <= 60

    # Change the truth behind the app's back: a hit does not see it.
    await api.sql("UPDATE items SET name = 'changed behind the cache' WHERE id = 1")
    second = await api.client.get("/api/items/1")
    assert second.content == stored
    assert second.json()["name"] == "cached"


async def test_missing_item_is_not_cached(api: Api, raw_cache: Redis) -> None:
    assert (await api.client.get("/api/items/7")).status_code == 404
    assert await raw_cache.exists("items:7") == 0
    await api.sql("INSERT INTO items (id, name) VALUES (7, 'late')")
    assert (await api.client.get("/api/items/7")).json()["name"] == "late"


async def test_patch_and_delete_invalidate_the_item(api: Api, raw_cache: Redis) -> None:
    await create_item(api, "before")
    await api.client.get("/api/items/1")
    assert await raw_cache.exists("items:1") == 1

    await api.client.patch("/api/items/1", json={"name": "after"})
    assert await raw_cache.exists("items:1") == 0
    assert (await api.client.get("/api/items/1")).json()["name"] == "after"

    assert await raw_cache.exists("items:1") == 1
    await api.client.delete("/api/items/1")
    assert await raw_cache.exists("items:1") == 0
    assert (await api.client.get("/api/items/1")).status_code == 404


async def test_list_pages_are_cached_and_every_write_invalidates_them(
    api: Api, raw_cache: Redis
) -> None:
    await create_item(api, "a")
    version = int(await raw_cache.get("items:list:version"))
    page = await api.client.get("/api/items", params={"skip": 0, "limit": 10})
    other_page = await api.client.get("/api/items", params={"skip": 1, "limit": 5})
    assert await raw_cache.get(f"items:list:v{version}:0:10") == page.content
    assert await raw_cache.get(f"items:list:v{version}:1:5") == other_page.content

    # A row written behind the app's back stays invisible: the page is served from cache.
    await api.sql("INSERT INTO items (name) VALUES ('sneaky')")
    again = await api.client.get("/api/items", params={"skip": 0, "limit": 10})
    assert [item["name"] for item in again.json()] == ["a"]

    for write in (
        lambda: api.client.post("/api/items", json={"name": "b"}),
        lambda: api.client.patch("/api/items/1", json={"name": "a2"}),
        lambda: api.client.delete("/api/items/2"),
    ):
        before = int(await raw_cache.get("items:list:version"))
        assert (await write()).status_code in (200, 201, 204)
        after = int(await raw_cache.get("items:list:version"))
        assert after == before + 1
        fresh = await api.client.get("/api/items", params={"skip": 0, "limit": 10})
        rows = await api.sql("SELECT id, name FROM items ORDER BY id LIMIT 10")
        assert [(item["id"], item["name"]) for item in fresh.json()] == [tuple(r) for r in rows]
        assert await raw_cache.get(f"items:list:v{after}:0:10") == fresh.content


async def test_invalidation_never_scans_the_keyspace(api: Api, raw_cache: Redis) -> None:
    await raw_cache.config_resetstat()
    # Plenty of unrelated keys: invalidation must not cost anything per key.
    await raw_cache.mset({f"unrelated:{n}": b"x" for n in range(500)})
    await create_item(api, "x")
    await api.client.get("/api/items")
    await api.client.get("/api/items/1")
    await api.client.patch("/api/items/1", json={"name": "y"})
    await api.client.delete("/api/items/1")
    await api.client.post("/api/notes", json={"title": "t", "content": "c"})
    await api.client.delete("/api/notes/1")

    stats = await raw_cache.info("commandstats")
    used = {name.removeprefix("cmdstat_") for name in stats}
    assert {"get", "set"} <= used
    assert used.isdisjoint({"keys", "scan"}), used


async def test_notes_are_cached_and_invalidated(api: Api, raw_cache: Redis) -> None:
    created = await api.client.post("/api/notes", json={"title": "t", "content": "c"})
    assert created.status_code == 201
    listed = await api.client.get("/api/notes")
    version = int(await raw_cache.get("notes:list:version") or 0)
    assert await raw_cache.get(f"notes:list:v{version}:0:100") == listed.content
    one = await api.client.get("/api/notes/1")
    assert await raw_cache.get("notes:1") == one.content

    await api.client.delete("/api/notes/1")
    assert await raw_cache.exists("notes:1") == 0
    assert int(await raw_cache.get("notes:list:version")) == version + 1
    assert (await api.client.get("/api/notes/1")).status_code == 404
    assert (await api.client.get("/api/notes")).json() == []

    await api.client.post("/api/notes", json={"title": "t2", "content": "c2"})
    assert [note["title"] for note in (await api.client.get("/api/notes")).json()] == ["t2"]


async def test_entries_expire_after_the_ttl(
    pg: PostgresServer, cache_server: CacheServer, raw_cache: Redis
) -> None:
    settings = make_settings(pg, cache_server, cache_ttl=1)
    async with running_app(settings) as api:
        await create_item(api, "original")
        await api.client.get("/api/items/1")
        await api.client.get("/api/items")
        assert await raw_cache.ttl("items:1") == 1
        await api.sql("UPDATE items SET name = 'updated directly'")
        assert (await api.client.get("/api/items/1")).json()["name"] == "original"

        await asyncio.sleep(1.3)
        assert (await api.client.get("/api/items/1")).json()["name"] == "updated directly"
        assert (await api.client.get("/api/items")).json()[0]["name"] == "updated directly"


async def test_cache_disabled_reads_postgres_every_time(
    pg: PostgresServer, cache_server: CacheServer, raw_cache: Redis
) -> None:
    settings: Settings = make_settings(pg, cache_server, cache_enabled=False)
    await raw_cache.flushdb()
    async with running_app(settings) as api:
        await create_item(api, "plain")
        assert (await api.client.get("/api/items/1")).status_code == 200
        await api.sql("UPDATE items SET name = 'fresh'")
        assert (await api.client.get("/api/items/1")).json()["name"] == "fresh"
        assert await raw_cache.dbsize() == 0
