"""requirements.yml declares every collection the roles and playbooks use, and the
collections installed for the tests satisfy its version ranges."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from packaging.specifiers import SpecifierSet

REPO_ROOT = Path(__file__).resolve().parent.parent
USED = re.compile(r"\b((?:community|ansible)\.(?!builtin\b)[a-z_]+)\.[a-z_]+")


def declared() -> dict[str, SpecifierSet]:
    data = yaml.safe_load((REPO_ROOT / "requirements.yml").read_text())
    return {c["name"]: SpecifierSet(c["version"]) for c in data["collections"]}


def used() -> set[str]:
    found: set[str] = set()
    for folder in ("roles", "playbooks", "molecule"):
        for path in (REPO_ROOT / folder).rglob("*.yml"):
            found |= set(USED.findall(path.read_text()))
    found |= set(USED.findall((REPO_ROOT / "site.yml").read_text()))
    return found


def installed_version(name: str) -> str:
    import ansible_collections  # the `ansible` package's bundle

    namespace, collection = name.split(".")
    manifest = Path(ansible_collections.__path__[0]) / namespace / collection / "MANIFEST.json"
    return str(yaml.safe_load(manifest.read_text())["collection_info"]["version"])


def test_every_collection_used_is_declared() -> None:
    assert used() <= set(declared()), sorted(used() - set(declared()))


def test_the_bundled_collections_are_in_the_declared_ranges() -> None:
    for name, versions in declared().items():
        assert installed_version(name) in versions, (name, installed_version(name), versions)
