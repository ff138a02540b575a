"""/api/notes: list, create, get, delete; bad input is refused and writes nothing."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.apps import Api


async def test_seed_walkthrough(api: Api) -> None:
    body = {"title": "Meeting notes", "content": "Discussed project timeline and milestones."}
    created = await api.client.post("/api/notes", json=body)
    assert created.status_code == 201
    note = created.json()
    assert set(note) == {"id", "title", "content", "created_at"}
    assert (note["id"], note["title"], note["content"]) == (1, body["title"], body["content"])
    assert datetime.fromisoformat(note["created_at"]).utcoffset() is not None

    assert (await api.client.get("/api/notes")).json() == [note]
    assert (await api.client.get("/api/notes/1")).json() == note

    deleted = await api.client.delete("/api/notes/1")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await api.client.get("/api/notes")).json() == []


async def test_pagination(api: Api) -> None:
    for n in range(4):
        await api.client.post("/api/notes", json={"title": f"t{n}", "content": "c"})
    page = (await api.client.get("/api/notes", params={"skip": 2, "limit": 5})).json()
    assert [note["title"] for note in page] == ["t2", "t3"]
    assert (await api.client.get("/api/notes", params={"limit": 101})).status_code == 422
    assert (await api.client.get("/api/notes", params={"skip": -1})).status_code == 422


async def test_unknown_note_is_404(api: Api) -> None:
    for response in (
        await api.client.get("/api/notes/42"),
        await api.client.delete("/api/notes/42"),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": "note 42 not found"}


async def test_notes_cannot_be_edited(api: Api) -> None:
    await api.client.post("/api/notes", json={"title": "t", "content": "c"})
    response = await api.client.patch("/api/notes/1", json={"title": "changed"})
    assert response.status_code == 405
    assert (await api.client.get("/api/notes/1")).json()["title"] == "t"


@pytest.mark.parametrize("note_id", ["0", "2147483648", "x"])
async def test_bad_ids(api: Api, note_id: str) -> None:
    assert (await api.client.get(f"/api/notes/{note_id}")).status_code == 422
    assert (await api.client.delete(f"/api/notes/{note_id}")).status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        {"title": "no content"},
        {"content": "no title"},
        {"title": "", "content": "c"},
        {"title": "t" * 256, "content": "c"},
        {"title": "t", "content": None},
        {"title": "t", "content": 42},
        {"title": "t", "content": "c", "tags": []},
        {"title": "t\u0000", "content": "c"},
        {"title": "t", "content": "c\u0000"},
        [],
    ],
)
async def test_create_rejects_bad_input_and_writes_nothing(api: Api, body: object) -> None:
    response = await api.client.post("/api/notes", json=body)
    assert response.status_code == 422, response.text
    assert await api.count("notes") == 0


async def test_malformed_json(api: Api) -> None:
    response = await api.client.post(
        "/api/notes", content=b'{"title": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"
    assert await api.count("notes") == 0
