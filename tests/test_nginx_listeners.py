"""The listener checks and the gateway's doc links of roles/nginx (its Ansible filters)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

PLUGIN = Path(__file__).resolve().parent.parent / "roles/nginx/filter_plugins/nginx_gateway.py"
_spec = importlib.util.spec_from_file_location("nginx_gateway_plugin", PLUGIN)
assert _spec is not None and _spec.loader is not None
gateway = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gateway)

TOPOLOGY = Path(__file__).resolve().parent.parent / "roles/webstack/filter_plugins/topology.py"
_tspec = importlib.util.spec_from_file_location("webstack_topology_plugin_gw", TOPOLOGY)
assert _tspec is not None and _tspec.loader is not None
topology = importlib.util.module_from_spec(_tspec)
_tspec.loader.exec_module(topology)


def test_the_default_listeners():
    listeners = gateway.nginx_listeners([{"port": 80}, {"port": 443, "tls": True}, {"port": 8080}])
    assert listeners == [
        {"listen": "80", "port": 80, "tls": False, "address": ""},
        {"listen": "443", "port": 443, "tls": True, "address": ""},
        {"listen": "8080", "port": 8080, "tls": False, "address": ""},
    ]


def test_addresses():
    listeners = gateway.nginx_listeners(
        [
            {"port": 443, "address": "::", "tls": True},
            {"port": 80, "address": "[::1]"},
            {"port": 80, "address": "10.0.0.1"},
            {"port": 80, "address": "*"},
        ]
    )
    assert [item["listen"] for item in listeners] == ["[::]:443", "[::1]:80", "10.0.0.1:80", "80"]


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        ([{"port": 0}], "webstack_nginx_listen[0]: port must be an integer 1-65535"),
        ([{"port": "80"}], "webstack_nginx_listen[0]: port must be"),
        (
            [{"port": 80}, {"port": 80, "tls": True}],
            "webstack_nginx_listen[1]: 80 is already listed",
        ),
        ([{"port": 443, "tls": "yes"}], "webstack_nginx_listen[0]: tls must be true or false"),
        ([{"port": 80, "ssl": True}], "webstack_nginx_listen[0]: unknown fields ['ssl']"),
        (["8080"], "webstack_nginx_listen[0]: must be a mapping"),
        ([{"port": 80, "address": "bad address"}], "is not an IP address or host name"),
        ([], "non-empty list"),
    ],
)
def test_bad_listeners_are_named(listen, problem):
    with pytest.raises(AnsibleFilterError) as error:
        gateway.nginx_listeners(listen)
    assert problem in str(error.value)


def test_docs_links_from_the_service_map():
    services = topology.webstack_topology(
        [
            {"name": "app", "domains": ["items", "notes"], "prefix": "", "port": 8000},
            {"name": "users", "domains": ["users"], "prefix": "/users", "port": 8001},
            {"name": "orders", "domains": ["orders"], "prefix": "/orders", "port": 8002},
            {"name": "payments", "domains": ["payments"], "prefix": "/payments", "port": 8003},
        ],
        {"all": ["p", "a"], "proxy": ["p"], "app": ["a"]},
        {"workers": 2, "db_pool_size": 5, "db_max_overflow": 5},
    )
    links = {link["name"]: link for link in gateway.nginx_docs_links(services)}
    assert links["app"]["docs"] == "/docs"
    assert links["app"]["alias"] is None
    assert {name: links[name]["alias"] for name in ("users", "orders", "payments")} == {
        "users": "/user-docs",
        "orders": "/order-docs",
        "payments": "/payment-docs",
    }
    assert links["orders"]["openapi"] == "/orders/openapi.json"
    assert links["payments"]["redoc"] == "/payments/redoc"
