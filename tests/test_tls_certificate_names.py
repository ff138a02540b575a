"""The name checks of roles/tls_certificate (its Ansible filters)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

PLUGIN = Path(__file__).resolve().parent.parent / (
    "roles/tls_certificate/filter_plugins/tls_certificate.py"
)
_spec = importlib.util.spec_from_file_location("tls_certificate_plugin", PLUGIN)
assert _spec is not None and _spec.loader is not None
names = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(names)


def test_dns_names_and_addresses_pass_and_are_lowered():
    checked = names.tls_certificate_checked_names(
        ["Shop.Example.com.", "10.0.0.1", "::1", "*.example.com", "localhost"]
    )
    assert checked == ["shop.example.com", "10.0.0.1", "::1", "*.example.com", "localhost"]


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("bad_name.example.com", "not a DNS name"),
        ("-leading.example.com", "not a DNS name"),
        ("a..b", "not a DNS name"),
        ("x" * 64 + ".example.com", "not a DNS name"),
        ("*.com", "wildcard directly under a top-level domain"),
        ("", "non-empty string"),
        (5, "non-empty string"),
    ],
)
def test_a_bad_entry_is_named_with_its_index(bad, problem):
    with pytest.raises(AnsibleFilterError) as error:
        names.tls_certificate_checked_names(["ok.example.com", bad])
    assert str(error.value).startswith("tls_certificate_names[1] (")
    assert problem in str(error.value)


def test_a_repeated_name_is_refused():
    with pytest.raises(AnsibleFilterError, match=r"\[1\].*repeats tls_certificate_names\[0\]"):
        names.tls_certificate_checked_names(["a.example.com", "A.example.com"])


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("10.0.0.1", "IP address"),
        ("*.example.com", "wildcard"),
        ("localhost", "public DNS name"),
        ("gateway", "public DNS name"),
    ],
)
def test_acme_takes_public_dns_names_only(bad, problem):
    with pytest.raises(AnsibleFilterError, match=problem):
        names.tls_certificate_checked_names(["shop.example.com", bad], "acme")


def test_an_empty_list_is_refused():
    with pytest.raises(AnsibleFilterError, match="non-empty list"):
        names.tls_certificate_checked_names([])


def test_derived_names_drop_what_does_not_fit():
    candidates = ["web_1", "web1.example.internal", "", None, "10.0.0.5", "web1.example.internal"]
    assert names.tls_certificate_usable_names(candidates) == ["web1.example.internal", "10.0.0.5"]


def test_subject_alt_names():
    assert names.tls_certificate_sans(["a.example.com", "10.0.0.1", "::1"]) == [
        "DNS:a.example.com",
        "IP:10.0.0.1",
        "IP:::1",
    ]


@pytest.mark.parametrize(
    ("name", "covered"),
    [
        ("shop.example.com", True),
        ("www.example.com", True),  # the wildcard
        ("a.b.example.com", False),  # a wildcard covers one label
        ("example.com", False),
        ("10.0.0.1", True),
        ("10.0.0.2", False),
    ],
)
def test_covers(name, covered):
    sans = ["DNS:shop.example.com", "DNS:*.example.com", "IP:10.0.0.1"]
    assert names.tls_certificate_covers(sans, name) is covered
