"""Health, the documentation endpoints, and serving a subset of the domains."""

from __future__ import annotations

import pytest

from app.core.settings import Settings
from app.main import create_app
from tests.apps import Api, running_app


async def test_health(api: Api) -> None:
    response = await api.client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "release": "unknown"}


async def test_docs_and_schema(api: Api) -> None:
    docs = await api.client.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    redoc = await api.client.get("/redoc")
    assert redoc.status_code == 200
    assert "redoc" in redoc.text.lower()

    schema = (await api.client.get("/openapi.json")).json()
    operations = {(path, method) for path, methods in schema["paths"].items() for method in methods}
    assert operations == {
        ("/health", "get"),
        ("/api/items", "get"),
        ("/api/items", "post"),
        ("/api/items/{item_id}", "get"),
        ("/api/items/{item_id}", "patch"),
        ("/api/items/{item_id}", "delete"),
        ("/api/notes", "get"),
        ("/api/notes", "post"),
        ("/api/notes/{note_id}", "get"),
        ("/api/notes/{note_id}", "delete"),
    }
    # Reads answer with pre-serialised bytes, yet their response model is still declared.
    get_item = schema["paths"]["/api/items/{item_id}"]["get"]["responses"]["200"]
    assert get_item["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ItemRead"
    }
    list_notes = schema["paths"]["/api/notes"]["get"]["responses"]["200"]
    assert list_notes["content"]["application/json"]["schema"]["items"] == {
        "$ref": "#/components/schemas/NoteRead"
    }
    limit = next(
        p for p in schema["paths"]["/api/items"]["get"]["parameters"] if p["name"] == "limit"
    )
    assert limit["schema"]["maximum"] == 100
    assert limit["schema"]["default"] == 100


async def test_one_codebase_serves_a_subset(settings: Settings) -> None:
    async with running_app(settings, domains=["notes"]) as notes_only:
        assert (await notes_only.client.get("/api/notes")).status_code == 200
        assert (await notes_only.client.get("/api/items")).status_code == 404
        assert (await notes_only.client.get("/health")).status_code == 200


def test_unknown_domain_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown domains"):
        create_app(domains=["items", "invoices"])
