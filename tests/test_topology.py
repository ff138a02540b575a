"""The service map checks of roles/webstack (its Ansible filter), and its paths against the app."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

from app.main import ALL_DOMAINS, create_app

PLUGIN = Path(__file__).resolve().parent.parent / "roles/webstack/filter_plugins/topology.py"
_spec = importlib.util.spec_from_file_location("webstack_topology_plugin", PLUGIN)
assert _spec is not None and _spec.loader is not None
topology = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(topology)

DEFAULTS = {"workers": 2, "db_pool_size": 5, "db_max_overflow": 5}
GROUPS = {"all": ["p1", "a1", "a2"], "proxy": ["p1"], "app": ["a1", "a2"]}
SEED_001 = [
    {"name": "app", "domains": ["items", "notes"], "prefix": "", "port": 8000},
    {"name": "users", "domains": ["users"], "prefix": "/users", "port": 8001},
    {"name": "orders", "domains": ["orders"], "prefix": "/orders", "port": 8002, "workers": 4},
    {"name": "payments", "domains": ["payments"], "prefix": "/payments", "port": 8003},
]


def normalise(services: Any, groups: dict[str, list[str]] = GROUPS) -> list[dict[str, Any]]:
    return topology.webstack_topology(services, groups, DEFAULTS, "/run/webstack")


def test_every_service_gets_its_hosts_paths_and_sizes() -> None:
    app, users, orders, _ = normalise(SEED_001)
    assert app["hosts"] == ["a1", "a2"]
    assert app["paths"] == ["/api/items", "/api/notes"]
    assert app["prefix_paths"] == ["/docs", "/redoc", "/openapi.json"]
    assert app["metrics_path"] == "/metrics"
    assert users["socket"] == "/run/webstack/users.sock"
    assert users["upstream"] == "webstack_users"
    assert users["metrics_path"] == "/users/metrics"
    assert users["prefix_paths"] == []
    assert (orders["workers"], orders["db_pool_size"]) == (4, 5)


def test_the_database_budget_counts_every_worker_of_every_service_on_every_host() -> None:
    services = normalise(SEED_001)
    # 2 hosts x (2 + 2 + 4 + 2 workers) x (5 + 5)
    assert topology.webstack_db_connections(services) == 2 * 10 * 10


def test_the_database_budget_is_sized_for_the_planned_hosts_at_least() -> None:
    services = normalise(SEED_001)
    # Sized for 3 hosts: a third app host joins without a new max_connections.
    assert topology.webstack_db_connections(services, 3) == 3 * 10 * 10
    assert topology.webstack_db_connections(services, "3") == 3 * 10 * 10
    # More hosts than planned: the budget follows the hosts.
    assert topology.webstack_db_connections(services, 1) == 2 * 10 * 10


@pytest.mark.parametrize("planned", [0, "one", 1.5, True])
def test_a_bad_planned_host_count_is_refused(planned: object) -> None:
    with pytest.raises(AnsibleFilterError, match="webstack_db_planned_hosts"):
        topology.webstack_db_connections(normalise(SEED_001), planned)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("services", "message"),
    [
        ([], "must be a non-empty list"),
        ([*SEED_001, SEED_001[1]], r"webstack_services\[4\] \(users\): declared twice"),
        (
            [{"name": "app", "domains": ["item"], "port": 8000}],
            r"webstack_services\[0\] \(app\): unknown domain 'item'",
        ),
        (
            [*SEED_001, {"name": "users2", "domains": ["users"], "port": 8009}],
            "domain 'users' is already served by users",
        ),
        (
            [
                {"name": "a", "domains": ["items"], "prefix": "", "port": 8000},
                {"name": "b", "domains": ["notes"], "prefix": "", "port": 8001},
            ],
            r"webstack_services\[1\] \(b\): URL prefix '\(root\)' is already taken by a",
        ),
        (
            [{"name": "users", "domains": ["users"], "prefix": "/orders", "port": 8000}],
            "prefix '/orders' must be empty",
        ),
        ([{"name": "app", "domains": ["items"], "port": 80}], "port must be an integer"),
        (
            [
                {"name": "a", "domains": ["items"], "port": 8000},
                {"name": "b", "domains": ["users"], "prefix": "/users", "port": 8000},
            ],
            "port 8000 is already used by a",
        ),
        (
            [{"name": "app", "domains": ["items"], "port": 8000, "group": "web"}],
            "group 'web', which has no hosts, while the proxy group routes to it",
        ),
        (
            [{"name": "orders", "domains": ["orders"], "prefix": "/orders", "port": 8000}],
            "serves orders, which needs a service serving users",
        ),
        ([{"name": "App", "domains": ["items"], "port": 8000}], "name must be"),
        ([{"name": "app", "domains": ["items"], "port": 8000, "pool": 3}], "unknown fields"),
        ([{"name": "app", "domains": ["items"], "port": 8000, "workers": 0}], "workers must"),
    ],
)
def test_bad_service_maps_are_refused_naming_the_entry(services: Any, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        normalise(services)


def test_addresses_come_from_the_inventory_and_must_be_ip_addresses() -> None:
    hostvars = {
        "a": {"ansible_host": "10.0.0.1"},
        "b": {"ansible_host": "203.0.113.5", "webstack_private_address": "10.0.0.2"},
        "c": {"webstack_private_address": "fd00::3"},
    }
    assert topology.webstack_addresses(hostvars, ["a", "b", "c"]) == {
        "a": "10.0.0.1",
        "b": "10.0.0.2",
        "c": "fd00::3",
    }
    with pytest.raises(AnsibleFilterError, match=r"host d: ansible_host .* is 'd\.example'"):
        topology.webstack_addresses({"d": {"ansible_host": "d.example"}}, ["d"])
    with pytest.raises(AnsibleFilterError, match="host e: set webstack_private_address"):
        topology.webstack_addresses({"e": {}}, ["e"])
    assert topology.webstack_hostport("fd00::3", 8000) == "[fd00::3]:8000"


def test_the_paths_routed_to_each_domain_are_the_ones_its_routes_answer() -> None:
    """nginx routes what DOMAIN_PATHS says; every route of a domain must lie under them."""
    assert set(topology.DOMAIN_PATHS) == set(ALL_DOMAINS)
    for domain, path in topology.DOMAIN_PATHS.items():
        routes = set(create_app(domains=[domain]).openapi()["paths"]) - {"/health"}
        assert routes, domain
        for route in routes:
            assert route == path or route.startswith(path + "/"), (domain, route)


def test_the_calls_between_domains_are_the_urls_the_app_requires() -> None:
    from app.core.settings import DOMAIN_REQUIREMENTS

    for domain in ALL_DOMAINS:
        urls = {f"{called}_url" for called in topology.DOMAIN_CALLS.get(domain, ())}
        required = set(DOMAIN_REQUIREMENTS.get(domain, ())) - {"jwt_secret", "cache_pass"}
        assert urls == required, domain


def test_the_login_and_registration_paths_are_routes_of_the_users_domain() -> None:
    # POST /users itself (the seed's registration) is hidden from the schema; the seed-001
    # requests of the molecule checks exercise it through nginx.
    paths = create_app(domains=["users"]).openapi()["paths"]
    for path in set(topology.DOMAIN_AUTH_PATHS["users"]) - {topology.DOMAIN_PATHS["users"]}:
        assert "post" in paths.get(path, {}), path


def test_the_secrets_of_each_domain_are_the_ones_the_app_requires() -> None:
    """A service's settings file holds the cache password and the token secret only where
    one of its domains needs them (app/core/settings.py, DOMAIN_REQUIREMENTS)."""
    from app.core.settings import DOMAIN_REQUIREMENTS

    fields = {"cache": "cache_pass", "jwt": "jwt_secret"}
    for domain in ALL_DOMAINS:
        secrets = {fields[s] for s in topology.DOMAIN_SECRETS[domain]}
        assert secrets == set(DOMAIN_REQUIREMENTS.get(domain, ())) & set(fields.values())


def test_each_service_has_its_own_database_role_and_account() -> None:
    app, users, orders, payments = normalise(SEED_001)
    assert [(s["database"], s["db_user"]) for s in (app, users, orders, payments)] == [
        ("appdb", "appuser"),
        ("user_db", "user_user"),
        ("order_db", "order_user"),
        ("payment_db", "payment_user"),
    ]
    assert [s["user"] for s in (app, users)] == ["webstack-app", "webstack-users"]
    assert (app["secrets"], orders["secrets"], users["secrets"]) == (
        ["cache"],
        ["jwt"],
        ["cache", "jwt"],
    )
    # 2 hosts x 4 workers x (5 + 5): the service's share of the budget.
    assert orders["db_connections"] == 80
    one = normalise([{"name": "shop", "domains": list(ALL_DOMAINS), "port": 8000}])[0]
    assert (one["database"], one["db_user"]) == ("appdb", "appuser")
    named = normalise([{"name": "app", "domains": ["items"], "port": 8000, "database": "cat"}])
    assert (named[0]["database"], named[0]["db_user"]) == ("cat", "cat_user")


@pytest.mark.parametrize(
    ("services", "message"),
    [
        (
            [
                {"name": "a", "domains": ["items"], "prefix": "", "port": 8000},
                {
                    "name": "b",
                    "domains": ["users"],
                    "prefix": "/users",
                    "port": 8001,
                    "database": "appdb",
                },
            ],
            r"webstack_services\[1\] \(b\): database 'appdb' is already the database of a",
        ),
        (
            [{"name": "app", "domains": ["items"], "port": 8000, "database": "App-DB"}],
            r"webstack_services\[0\] \(app\): database must be",
        ),
    ],
)
def test_services_sharing_a_database_are_refused(services: Any, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        normalise(services)


def test_a_missing_database_password_is_named() -> None:
    services = normalise(SEED_001)
    passwords = {"app": "a", "users": "u", "orders": "o"}
    with pytest.raises(AnsibleFilterError, match=r"webstack_db_passwords\.payments is not set"):
        topology.webstack_db_passwords_checked(passwords, services)
    passwords["payments"] = "p"
    assert topology.webstack_db_password(passwords, services[3]) == "p"


def test_the_tables_of_each_domain_are_the_apps() -> None:
    from app.migrate import owned_tables

    for domain in ALL_DOMAINS:
        tables = set(topology.DOMAIN_TABLES[domain]) | {"idempotency_keys"}
        assert tables == owned_tables([domain]), domain
