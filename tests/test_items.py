"""/api/items: the seed's acceptance cases, every error path, and nothing written on bad input."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from tests.apps import Api


async def create(api: Api, **body: object) -> dict[str, object]:
    response = await api.client.post("/api/items", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def parse(timestamp: object) -> datetime:
    assert isinstance(timestamp, str)
    parsed = datetime.fromisoformat(timestamp)
    assert parsed.utcoffset() is not None, "timestamps carry their offset"
    return parsed


async def test_seed_walkthrough(api: Api) -> None:
    """The seed's curl examples, in order."""
    created = await create(api, name="Widget", description="A test widget")
    assert created["id"] == 1
    assert created["name"] == "Widget"
    assert created["description"] == "A test widget"
    assert set(created) == {"id", "name", "description", "created_at", "updated_at"}
    assert parse(created["created_at"]) == parse(created["updated_at"])
    assert created["created_at"].endswith("+00:00")  # type: ignore[union-attr]

    listed = await api.client.get("/api/items")
    assert listed.status_code == 200
    assert listed.json() == [created]
    assert listed.headers["content-type"] == "application/json"

    fetched = await api.client.get("/api/items/1")
    assert fetched.status_code == 200
    assert fetched.json() == created

    updated = await api.client.patch("/api/items/1", json={"description": "Updated description"})
    assert updated.status_code == 200
    body = updated.json()
    assert body["description"] == "Updated description"
    assert body["name"] == "Widget"
    assert body["created_at"] == created["created_at"]
    assert parse(body["updated_at"]) > parse(created["updated_at"])

    deleted = await api.client.delete("/api/items/1")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await api.client.get("/api/items/1")).status_code == 404


async def test_create_without_description(api: Api) -> None:
    created = await create(api, name="Bare")
    assert created["description"] is None
    rows = await api.sql("SELECT name, description FROM items")
    assert [tuple(row) for row in rows] == [("Bare", None)]


async def test_create_accepts_255_characters(api: Api) -> None:
    created = await create(api, name="n" * 255)
    assert created["name"] == "n" * 255


async def test_list_is_ordered_and_paginated(api: Api) -> None:
    assert (await api.client.get("/api/items")).json() == []
    for index in range(5):
        await create(api, name=f"item-{index}")
    page = await api.client.get("/api/items", params={"skip": 1, "limit": 2})
    assert page.status_code == 200
    assert [item["name"] for item in page.json()] == ["item-1", "item-2"]
    past_the_end = await api.client.get("/api/items", params={"skip": 10})
    assert past_the_end.json() == []


async def test_list_default_and_maximum_limit_is_100(api: Api) -> None:
    await api.sql("INSERT INTO items (name) SELECT 'bulk-' || n FROM generate_series(1, 105) n")
    default = await api.client.get("/api/items")
    assert len(default.json()) == 100
    maximum = await api.client.get("/api/items", params={"limit": 100, "skip": 100})
    assert [item["id"] for item in maximum.json()] == [101, 102, 103, 104, 105]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 101},
        {"limit": 0},
        {"limit": -1},
        {"skip": -1},
        {"skip": 2_147_483_648},
        {"skip": "abc"},
        {"limit": "1.5"},
    ],
)
async def test_list_rejects_bad_pagination(api: Api, params: dict[str, object]) -> None:
    response = await api.client.get("/api/items", params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "query"


async def test_patch_changes_only_given_fields(api: Api) -> None:
    created = await create(api, name="Old", description="keep me")
    renamed = (await api.client.patch("/api/items/1", json={"name": "New"})).json()
    assert (renamed["name"], renamed["description"]) == ("New", "keep me")
    cleared = (await api.client.patch("/api/items/1", json={"description": None})).json()
    assert (cleared["name"], cleared["description"]) == ("New", None)
    assert (
        parse(cleared["updated_at"]) > parse(renamed["updated_at"]) > parse(created["updated_at"])
    )


async def test_empty_patch_changes_nothing(api: Api) -> None:
    created = await create(api, name="Still")
    response = await api.client.patch("/api/items/1", json={})
    assert response.status_code == 200
    assert response.json() == created


@pytest.mark.parametrize(
    "body",
    [
        {"name": None},
        {"name": ""},
        {"name": "x" * 256},
        {"name": 5},
        {"description": ["list"]},
        {"nmae": "typo"},
        ["not", "an", "object"],
    ],
)
async def test_patch_rejects_bad_input_and_writes_nothing(api: Api, body: object) -> None:
    created = await create(api, name="Keep", description="as is")
    response = await api.client.patch("/api/items/1", json=body)
    assert response.status_code == 422, response.text
    assert (await api.client.get("/api/items/1")).json() == created


async def test_unknown_item_is_404_with_reason(api: Api) -> None:
    for response in (
        await api.client.get("/api/items/999"),
        await api.client.patch("/api/items/999", json={"name": "x"}),
        await api.client.patch("/api/items/999", json={}),
        await api.client.delete("/api/items/999"),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": "item 999 not found"}


async def test_delete_twice(api: Api) -> None:
    await create(api, name="Once")
    assert (await api.client.delete("/api/items/1")).status_code == 204
    assert (await api.client.delete("/api/items/1")).status_code == 404
    assert await api.count("items") == 0


@pytest.mark.parametrize("item_id", ["0", "-1", "2147483648", "99999999999999999999", "abc", "1.5"])
async def test_ids_outside_int4_are_rejected(api: Api, item_id: str) -> None:
    await create(api, name="Only")
    for method in ("GET", "PATCH", "DELETE"):
        kwargs = {"json": {"name": "x"}} if method == "PATCH" else {}
        response = await api.client.request(method, f"/api/items/{item_id}", **kwargs)
        assert response.status_code == 422, (method, response.text)
        assert response.json()["detail"][0]["loc"] == ["path", "item_id"]
    assert (await api.client.get("/api/items/1")).json()["name"] == "Only"


async def test_largest_id_is_a_plain_404(api: Api) -> None:
    response = await api.client.get("/api/items/2147483647")
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"name": "broken"', {"content-type": "application/json"}),
        (b"not json at all", {"content-type": "application/json"}),
        (b"", {"content-type": "application/json"}),
        (b'{"name": "x"}', {"content-type": "text/plain"}),
        (b'"just a string"', {"content-type": "application/json"}),
        (b'["Widget"]', {"content-type": "application/json"}),
        (b"{}", {"content-type": "application/json"}),
        (b'{"name": 123}', {"content-type": "application/json"}),
        (b'{"name": true}', {"content-type": "application/json"}),
        (b'{"name": "ok", "description": 5}', {"content-type": "application/json"}),
        (b'{"name": "ok", "colour": "red"}', {"content-type": "application/json"}),
        (b'{"name": ""}', {"content-type": "application/json"}),
        (b'{"name": "a\\u0000b"}', {"content-type": "application/json"}),
        (
            b'{"name": "ok", "description": "nul \\u0000 here"}',
            {"content-type": "application/json"},
        ),
        ('{"name": "' + "é" * 256 + '"}', {"content-type": "application/json"}),
    ],
)
async def test_create_rejects_bad_input_and_writes_nothing(
    api: Api, content: bytes | str, headers: dict[str, str]
) -> None:
    response = await api.client.post("/api/items", content=content, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]
    assert await api.count("items") == 0


async def test_concurrent_creates_get_distinct_ids(api: Api) -> None:
    responses = await asyncio.gather(
        *(api.client.post("/api/items", json={"name": f"c{n}"}) for n in range(20))
    )
    assert {response.status_code for response in responses} == {201}
    assert len({response.json()["id"] for response in responses}) == 20
