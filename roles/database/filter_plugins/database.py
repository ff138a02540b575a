"""The database tier's hosts from the inventory groups, checked once at every play's start.

``db`` runs PostgreSQL: one host plainly, two or more as a Patroni cluster whose DCS is
the ``etcd`` group. ``backup`` holds the pgBackRest repository. Bad input stops the play
before anything changes, with a message naming what to change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

# The secrets (vault) each feature needs; the play stops at its start when one is missing.
HA_SECRETS = (
    "postgresql_replication_password",
    "postgresql_rewind_password",
    "patroni_restapi_password",
)
BACKUP_SECRETS = ("pgbackrest_repo_cipher_pass",)
# Only with a repository host of its own: pgBackRest speaks TLS between the hosts.
REMOTE_BACKUP_SECRETS = ("pgbackrest_tls_ca_certificate", "pgbackrest_tls_ca_private_key")


def _hosts(groups: Mapping[str, Iterable[str]], name: str) -> list[str]:
    return list(groups.get(name, []) or [])


def database_topology(
    groups: Mapping[str, Iterable[str]],
    addresses: Mapping[str, str],
    backups: bool,
    secrets: Mapping[str, Any],
) -> dict[str, Any]:
    """The tier's shape: ``ha``, ``members``, ``dcs``, ``repository`` (a host or None),
    ``local_repository`` and each host's ``address``.

    ``secrets`` maps the name of each secret (HA_SECRETS, BACKUP_SECRETS,
    REMOTE_BACKUP_SECRETS) to whether it is set.
    """
    members = _hosts(groups, "db")
    if not members:
        raise AnsibleFilterError("the inventory has no host in the db group")
    ha = len(members) > 1
    dcs = _hosts(groups, "etcd")
    if ha:
        others = [host for host in dcs if host not in members]
        if not dcs:
            raise AnsibleFilterError(
                f"the db group has {len(members)} hosts, so Patroni runs them and needs etcd "
                "as its DCS: put 3 (or 5) hosts in an `etcd` inventory group, e.g. the db "
                "hosts and one more (the cache host)"
            )
        if len(members) == 2 and not others:
            raise AnsibleFilterError(
                f"a db group of two needs a third DCS member, or losing either db host "
                f"loses the etcd majority and no failover happens: add a host that is not "
                f"in db (e.g. the cache host) to the etcd group (now {', '.join(dcs)})"
            )
        if len(dcs) % 2 == 0 or len(dcs) < 3:
            raise AnsibleFilterError(
                f"the etcd group has {len(dcs)} member(s) ({', '.join(dcs)}): etcd needs an "
                "odd number, 3 or 5, to keep a majority when one is lost; add or remove one"
            )

    repositories = _hosts(groups, "backup")
    if len(repositories) > 1:
        raise AnsibleFilterError(
            f"the backup group has {len(repositories)} hosts ({', '.join(repositories)}): "
            "it holds the one pgBackRest repository; keep one host in it"
        )
    repository = repositories[0] if repositories else None
    if backups:
        if repository is None and ha:
            raise AnsibleFilterError(
                "database_backups is on and the db group has several hosts: put the "
                "pgBackRest repository host in a `backup` inventory group (one host every "
                "member reaches, e.g. the third etcd member), or set database_backups: false"
            )
        if ha and repository in members:
            raise AnsibleFilterError(
                f"the backup host {repository} is also a db host: in a cluster the "
                "repository needs a host of its own (a lost db host must not take the "
                "backups with it), e.g. the third etcd member"
            )
        if repository is None:
            repository = members[0]
    needed = {name: "a Patroni cluster (two or more db hosts)" for name in HA_SECRETS if ha}
    if backups:
        needed |= {name: "backups (database_backups)" for name in BACKUP_SECRETS}
        if repository not in members:
            needed |= {
                name: f"backups to a repository host ({repository})"
                for name in REMOTE_BACKUP_SECRETS
            }
    missing = [f"{name} (for {why})" for name, why in needed.items() if not secrets.get(name)]
    if missing:
        raise AnsibleFilterError(
            f"missing secret: {'; '.join(missing)}. Put it in the vault (the shape is in "
            "inventories/production.example/group_vars/all/vault.yml.example)"
        )
    return {
        "ha": ha,
        "members": members,
        "dcs": dcs if ha else [],
        "repository": repository if backups else None,
        "local_repository": backups and repository in members,
        "address": {host: addresses[host] for host in {*members, *dcs, *repositories}},
    }


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"database_topology": database_topology}
