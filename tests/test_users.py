"""Users: registration rules, login, bearer tokens and who sees what."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest

from app.core.settings import Settings
from app.core.state import state_of
from devservers import CacheServer, PostgresServer
from tests.apps import Api, DomainApp, running_app
from tests.stack import JWT_SECRET, seed_001_settings

PASSWORD = "Correct horse 1"


@pytest.fixture
def users_settings(pg: PostgresServer, cache_server: CacheServer) -> Settings:
    return seed_001_settings(pg, cache_server)


@pytest.fixture
async def users(domain_app: DomainApp, users_settings: Settings) -> AsyncIterator[Api]:
    async with domain_app("users", users_settings) as running:
        yield running


async def register(api: Api, name: str, **extra: Any) -> dict[str, Any]:
    body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD, **extra}
    response = await api.client.post("/users/register", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def login(api: Api, name: str, password: str = PASSWORD) -> dict[str, str]:
    response = await api.client.post("/users/login", json={"username": name, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(user_id: int = 1, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": str(user_id), "iat": now, "exp": now + 600, "iss": "webstack", **changes}


async def test_register_login_and_me(users: Api) -> None:
    created = await register(users, "Alice", full_name="Alice Liddell")
    assert created["username"] == "alice"  # usernames and e-mails are case-insensitive
    assert created["email"] == "alice@example.com"
    assert created["full_name"] == "Alice Liddell"
    assert "password" not in json.dumps(created)
    stored = (await users.sql("SELECT password_hash FROM users"))[0][0]
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,")

    response = await users.client.post(
        "/users/login", json={"username": "ALICE", "password": PASSWORD}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 30 * 60
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "HS256"
    payload = jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"])
    assert payload["sub"] == str(created["id"])  # a string, as RFC 7519 wants
    assert payload["exp"] - payload["iat"] == 30 * 60

    me = await users.client.get("/users/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json() == created
    # Logging in with the e-mail address works too.
    assert await login(users, "Alice@Example.com")


@pytest.mark.parametrize(
    ("second", "detail"),
    [
        ({"email": "ALICE@example.com", "username": "other"}, "e-mail address already registered"),
        ({"email": "other@example.com", "username": "ALICE"}, "username already taken"),
    ],
)
async def test_duplicate_registration_is_409(
    users: Api, second: dict[str, str], detail: str
) -> None:
    await register(users, "alice")
    response = await users.client.post("/users/register", json={**second, "password": PASSWORD})
    assert response.status_code == 409
    assert response.json() == {"detail": detail}
    assert await users.count("users") == 1


async def test_concurrent_duplicates_register_once(users: Api) -> None:
    import asyncio

    body = {"email": "race@example.com", "username": "race", "password": PASSWORD}
    responses = await asyncio.gather(
        *(users.client.post("/users/register", json=body) for _ in range(4))
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]
    assert await users.count("users") == 1


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("", "at least 8 characters"),
        ("Ab1", "at least 8 characters"),
        ("x" * 7 + "1", None),  # 8 characters of two kinds: accepted (control)
        ("A1" * 65, "at most 128 characters"),
        ("abcdefghij", "must mix at least two of"),
        ("12345678901", "must mix at least two of"),
        ("        ", "must mix at least two of"),
        ("ABCDEFGHIJ", "must mix at least two of"),
        ("pass\x00word1", "NUL"),
        ("weakuser", "must mix at least two of"),
        ("Weakuser", "must not be the username"),
        ("WeakUser@Example.com", "must not be the username or the e-mail address"),
    ],
)
async def test_password_rule(users: Api, password: str, reason: str | None) -> None:
    body = {"email": "weakuser@example.com", "username": "weakuser", "password": password}
    response = await users.client.post("/users/register", json=body)
    if reason is None:
        assert response.status_code == 201, response.text
        return
    assert response.status_code == 422, response.text
    assert reason in response.text
    assert await users.count("users") == 0


@pytest.mark.parametrize(
    "email",
    [
        "",
        "plainaddress",
        "@example.com",
        "alice@",
        "alice@@example.com",
        "alice@example",
        "alice@exa mple.com",
        "alice@.example.com",
        "a" * 250 + "@example.com",  # over 254 characters
        "alice@example.com\n",
        123,
    ],
)
async def test_malformed_emails_are_refused(users: Api, email: object) -> None:
    body = {"email": email, "username": "alice", "password": PASSWORD}
    response = await users.client.post("/users/register", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "email"]
    assert await users.count("users") == 0


@pytest.mark.parametrize(
    "body",
    [
        {"email": "a@example.com", "username": "ab", "password": PASSWORD},  # too short
        {"email": "a@example.com", "username": "a" * 33, "password": PASSWORD},
        {"email": "a@example.com", "username": "al ice", "password": PASSWORD},
        {"email": "a@example.com", "username": "-alice", "password": PASSWORD},
        {"email": "a@example.com", "username": "alice", "password": PASSWORD, "admin": True},
        {"email": "a@example.com", "password": PASSWORD},
        {"email": "a@example.com", "username": "alice", "password": 12345678},
    ],
)
async def test_other_bad_registrations(users: Api, body: dict[str, Any]) -> None:
    response = await users.client.post("/users/register", json=body)
    assert response.status_code == 422, response.text
    assert await users.count("users") == 0


@pytest.mark.parametrize(
    "body",
    [
        {"username": "alice", "password": "Wrong horse 1"},
        {"username": "nobody", "password": PASSWORD},
        {"username": "nobody@example.com", "password": PASSWORD},
    ],
)
async def test_bad_logins_are_401(users: Api, body: dict[str, str]) -> None:
    await register(users, "alice")
    response = await users.client.post("/users/login", json=body)
    assert response.status_code == 401
    assert response.json() == {"detail": "incorrect username or password"}
    assert response.headers["www-authenticate"] == "Bearer"


async def test_malformed_logins_are_422(users: Api) -> None:
    for body in ({"username": "alice"}, {"username": "", "password": "x"}, {"password": "x"}):
        assert (await users.client.post("/users/login", json=body)).status_code == 422


async def test_a_changed_hash_cost_upgrades_the_hash_at_login(
    users_settings: Settings,
) -> None:
    async with running_app(users_settings, domains=["users"]) as users:
        await register(users, "alice")
    stronger = users_settings.model_copy(update={"password_hash_time_cost": 3})
    async with running_app(stronger, domains=["users"], reset=False) as users:
        await login(users, "alice")
        stored = (await users.sql("SELECT password_hash FROM users"))[0][0]
        assert ",t=3," in stored
        await login(users, "alice")  # and the new hash verifies


async def test_listing_and_reading_users_needs_a_token_and_hides_emails(users: Api) -> None:
    alice = await register(users, "alice")
    bob = await register(users, "bob")
    for path in ("/users", "/users/1", "/users/me"):
        response = await users.client.get(path)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"

    auth = await login(users, "bob")
    listed = await users.client.get("/users", headers=auth)
    assert listed.status_code == 200
    assert [u["username"] for u in listed.json()] == ["alice", "bob"]
    assert all(set(u) == {"id", "username", "created_at"} for u in listed.json())
    page = await users.client.get("/users?skip=1&limit=1", headers=auth)
    assert [u["id"] for u in page.json()] == [bob["id"]]
    assert (await users.client.get("/users?limit=101", headers=auth)).status_code == 422

    one = await users.client.get(f"/users/{alice['id']}", headers=auth)
    assert one.json() == {k: alice[k] for k in ("id", "username", "created_at")}
    missing = await users.client.get("/users/99", headers=auth)
    assert missing.status_code == 404
    assert missing.json() == {"detail": "user 99 not found"}


async def test_token_expiry_and_forgery(users: Api, users_settings: Settings) -> None:
    user_id = (await register(users, "alice"))["id"]

    good = jwt.encode(claims(user_id), JWT_SECRET, algorithm="HS256")
    assert (await users.client.get("/users/me", headers=bearer(good))).status_code == 200

    expired = jwt.encode(
        claims(user_id, iat=int(time.time()) - 3600, exp=int(time.time()) - 1),
        JWT_SECRET,
        algorithm="HS256",
    )
    header, body, signature = good.split(".")
    other_user = b64(claims(user_id + 1))
    forged = {
        "expired": expired,
        "tampered payload": f"{header}.{other_user}.{signature}",
        "tampered signature": f"{header}.{body}.{signature[:-4]}AAAA",
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{body}.",
        "alg none with signature": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{body}.{signature}",
        "HS512": jwt.encode(claims(user_id), JWT_SECRET, algorithm="HS512"),
        "other secret": jwt.encode(claims(user_id), "x" * 40, algorithm="HS256"),
        "no exp": jwt.encode(
            {k: v for k, v in claims(user_id).items() if k != "exp"}, JWT_SECRET, "HS256"
        ),
        "no sub": jwt.encode(
            {k: v for k, v in claims(user_id).items() if k != "sub"}, JWT_SECRET, "HS256"
        ),
        "other issuer": jwt.encode(claims(user_id, iss="elsewhere"), JWT_SECRET, "HS256"),
        "sub not a number": jwt.encode(claims(sub="alice"), JWT_SECRET, "HS256"),
        "sub out of range": jwt.encode(claims(sub="99999999999"), JWT_SECRET, "HS256"),
        "garbage": "not.a.token",
        "huge": "a" * 5000,
    }
    for name, token in forged.items():
        response = await users.client.get("/users/me", headers=bearer(token))
        assert response.status_code == 401, name
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"', name
        expected = "token expired" if name == "expired" else "invalid token"
        assert response.json() == {"detail": expected}, name

    # A valid token of an account that no longer exists.
    ghost = jwt.encode(claims(user_id + 100), JWT_SECRET, algorithm="HS256")
    assert (await users.client.get("/users/me", headers=bearer(ghost))).status_code == 401
    # Not a bearer token at all.
    basic = {"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="}
    assert (await users.client.get("/users/me", headers=basic)).status_code == 401


async def test_short_expiry_setting(users_settings: Settings) -> None:
    one_minute = users_settings.model_copy(update={"jwt_expire_minutes": 1})
    async with running_app(one_minute, domains=["users"]) as users:
        await register(users, "alice")
        response = await users.client.post(
            "/users/login", json={"username": "alice", "password": PASSWORD}
        )
        token = response.json()["access_token"]
        payload = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
        assert payload["exp"] - payload["iat"] == 60


async def test_users_domain_requires_the_jwt_secret(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    from app.core.settings import SettingsError
    from tests.apps import make_settings

    with pytest.raises(SettingsError, match="missing required settings: APP_JWT_SECRET"):
        async with running_app(make_settings(pg, cache_server), domains=["users"]):
            pass


# --- The seed's request shapes ---------------------------------------------------------


async def test_the_seed_registration_and_login_shapes(users: Api) -> None:
    # POST /users, as the seed's second walkthrough does, is the same as /users/register.
    seed = {
        "email": "demo@example.com",
        "username": "demo",
        "full_name": "Demo User",
        "password": "password123",
    }
    created = await users.client.post("/users", json=seed)
    assert created.status_code == 201, created.text
    assert set(created.json()) == {
        "id",
        "email",
        "username",
        "full_name",
        "is_active",
        "created_at",
    }
    other = await users.client.post(
        "/users/register",
        json={"username": "testuser", "email": "test@example.com", "password": "testpass123"},
    )
    assert other.status_code == 201
    logins = [
        {"json": {"username": "testuser", "password": "testpass123"}},
        {"json": {"username": "test@example.com", "password": "testpass123"}},
        {"json": {"email": "demo@example.com", "password": "password123"}},
        # The OAuth2 password form of the docs' Authorize button.
        {"data": {"grant_type": "password", "username": "demo", "password": "password123"}},
        {"data": {"username": "demo@example.com", "password": "password123", "scope": ""}},
    ]
    for login in logins:
        response = await users.client.post("/users/login", **login)  # type: ignore[arg-type]
        assert response.status_code == 200, (login, response.text)
        assert response.json()["token_type"] == "bearer"
        me = await users.client.get("/users/me", headers=bearer(response.json()["access_token"]))
        assert me.status_code == 200
    # Not both names, not neither, no other grant, no unknown fields: 422 naming the field.
    bad = [
        {"json": {"username": "demo", "email": "demo@example.com", "password": "password123"}},
        {"json": {"password": "password123"}},
        {"json": {"username": "demo", "password": "password123", "admin": True}},
        {"data": {"grant_type": "client_credentials", "username": "demo", "password": "x"}},
        {"data": {"username": "demo"}},
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
    ]
    for login in bad:
        response = await users.client.post("/users/login", **login)  # type: ignore[arg-type]
        assert response.status_code == 422, (login, response.text)
    missing = await users.client.post("/users/login", data={"username": "demo"})
    assert missing.json()["detail"][0]["loc"] == ["body", "password"]
    # The docs describe both bodies of login, and POST /users is no second entry.
    schema = (await users.client.get("/openapi.json")).json()
    assert set(schema["paths"]["/users/login"]["post"]["requestBody"]["content"]) == {
        "application/json",
        "application/x-www-form-urlencoded",
    }
    assert "post" not in schema["paths"]["/users"]


async def test_a_retried_registration_is_its_first_answer(users: Api) -> None:
    body = {"email": "r@example.com", "username": "retried", "password": PASSWORD}
    key = {"Idempotency-Key": "register-1"}
    first = await users.client.post("/users/register", json=body, headers=key)
    again = await users.client.post("/users/register", json=body, headers=key)
    assert (first.status_code, again.status_code) == (201, 201)  # not a 409
    assert again.json() == first.json()
    assert await users.count("users") == 1
    # Logins are not writes: their tokens are never stored, whatever the headers.
    login = {"username": "retried", "password": PASSWORD}
    for _ in range(2):
        response = await users.client.post("/users/login", json=login, headers=key)
        assert "idempotent-replayed" not in response.headers
    assert await users.count("idempotency_keys") == 1


async def test_an_inactive_account_cannot_log_in(users: Api) -> None:
    await register(users, "alice")
    auth = await login(users, "alice")
    await users.sql("UPDATE users SET is_active = false")
    response = await users.client.post(
        "/users/login", json={"username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 401
    assert response.json() == {"detail": "incorrect username or password"}  # as for others
    assert (await users.client.get("/users/me", headers=auth)).status_code == 401


# --- Login backoff ----------------------------------------------------------------------


@pytest.fixture
async def strict_users(domain_app: DomainApp) -> AsyncIterator[Api]:
    strict = {"login_max_failures": 2, "login_lockout_base": 1.0, "login_lockout_max": 2.0}
    async with domain_app("users", **strict) as running:
        yield running


async def attempt(api: Api, name: str, password: str) -> Any:
    return await api.client.post("/users/login", json={"username": name, "password": password})


async def test_failed_logins_lock_a_name_for_a_while(strict_users: Api) -> None:
    api = strict_users
    await register(api, "alice")
    for _ in range(2):  # the free failures
        assert (await attempt(api, "alice", "Wrong horse 1")).status_code == 401
    assert (await attempt(api, "alice", "Wrong horse 1")).status_code == 401  # locks it
    locked = await attempt(api, "alice", PASSWORD)  # even the right password waits
    assert locked.status_code == 429
    assert locked.json() == {"detail": "too many failed logins; try again later"}
    assert locked.headers["retry-after"] == "1"
    # Other names are not affected, and the lock ends by itself.
    await register(api, "bob")
    assert (await attempt(api, "bob", PASSWORD)).status_code == 200
    await asyncio.sleep(1.1)
    assert (await attempt(api, "alice", "Wrong horse 1")).status_code == 401
    doubled = await attempt(api, "alice", PASSWORD)
    assert (doubled.status_code, doubled.headers["retry-after"]) == (429, "2")
    await asyncio.sleep(2.1)
    assert (await attempt(api, "alice", PASSWORD)).status_code == 200  # and clears the count
    assert (await attempt(api, "alice", "Wrong horse 1")).status_code == 401
    assert (await attempt(api, "alice", PASSWORD)).status_code == 200


async def test_the_lock_does_not_tell_who_has_an_account(strict_users: Api) -> None:
    await register(strict_users, "alice")
    answers = {}
    for name in ("alice", "nobody"):
        codes = [(await attempt(strict_users, name, "Wrong horse 1")).status_code for _ in range(3)]
        last = await attempt(strict_users, name, "Wrong horse 1")
        answers[name] = (codes, last.status_code, last.json(), last.headers.get("retry-after"))
    assert answers["alice"] == answers["nobody"]
    assert answers["alice"][1] == 429
    # No address is kept in Valkey, only digests.
    keys = await state_of(strict_users.app).cache.client.keys("login:*")
    assert keys and not any(b"alice" in key or b"nobody" in key for key in keys)


async def test_logins_go_on_when_valkey_is_down(
    users_settings: Settings, cache_server: CacheServer
) -> None:
    settings = users_settings.model_copy(update={"login_max_failures": 1})
    async with running_app(settings, domains=["users"]) as api:
        await register(api, "alice")
        cache_server.pause()
        try:
            for _ in range(3):  # no count is kept: no lock
                assert (await attempt(api, "alice", "Wrong horse 1")).status_code == 401
            assert (await attempt(api, "alice", PASSWORD)).status_code == 200
        finally:
            cache_server.resume()
