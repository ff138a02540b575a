"""The app role builds its release on the controller: from a commit, named by version and
commit, once per commit; a dirty checkout is refused unless the operator allows it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: app
        tasks_from: release.yml
    - ansible.builtin.copy:
        content: "{{ {'release': app_release_name} | to_json }}"
        dest: "{{ result_file }}"
        mode: "0644"
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@localhost", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "src"
    (repo / "app").mkdir(parents=True)
    (repo / "app" / "main.py").write_text("VALUE = 1\n")
    (repo / "pyproject.toml").write_text('[project]\nname = "webstack"\nversion = "1.2.3"\n')
    (repo / "uv.lock").write_text("version = 1\n")
    (repo / "README.md").write_text("not part of a release\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    return repo


def build(tmp_path: Path, repo: Path, **extra: object) -> tuple[int, str, str]:
    playbook = tmp_path / "build.yml"
    playbook.write_text(PLAYBOOK)
    result_file = tmp_path / "result.json"
    result_file.unlink(missing_ok=True)
    extra_vars = {
        "app_source_dir": str(repo),
        "app_release_cache_dir": str(tmp_path / "cache"),
        "result_file": str(result_file),
        "ansible_host": "127.0.0.1",  # an address, as every host of a site has
        "ansible_python_interpreter": sys.executable,
        # Required by the role's argument spec; never used by the build.
        "webstack_db_passwords": {"app": "unused"},
        "app_cache_password": "unused",
        "pgbackrest_repo_cipher_pass": "unused",
        **extra,
    }
    # The app role reads the database tier's shape: one db host (this one).
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all:\n  children:\n    db:\n      hosts:\n        localhost:\n")
    run = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(playbook), "-e", json.dumps(extra_vars)],
        capture_output=True,
        text=True,
        env={**os.environ, "ANSIBLE_ROLES_PATH": str(REPO_ROOT / "roles"), "ANSIBLE_NOCOLOR": "1"},
        check=False,
    )
    release = json.loads(result_file.read_text())["release"] if result_file.exists() else ""
    return run.returncode, release, run.stdout + run.stderr


def test_a_commit_is_packed_once_under_its_version_and_commit(tmp_path, checkout):
    # Edits outside what a release holds do not make the checkout dirty.
    (checkout / "README.md").write_text("edited\n")
    code, release, output = build(tmp_path, checkout)
    assert code == 0, output
    commit = git(checkout, "rev-parse", "--short=12", "HEAD")
    assert release == f"1.2.3+g{commit}"
    archive = tmp_path / "cache" / f"webstack-{release}.tar.gz"
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["app", "app/main.py", "pyproject.toml", "uv.lock"]
    built = archive.stat().st_mtime_ns
    # The same commit again: the same release, the archive left as it was.
    code, again, output = build(tmp_path, checkout)
    assert (code, again) == (0, release), output
    assert archive.stat().st_mtime_ns == built


def test_uncommitted_code_is_refused_unless_allowed(tmp_path, checkout):
    (checkout / "app" / "main.py").write_text("VALUE = 2\n")
    code, _, output = build(tmp_path, checkout)
    assert code != 0
    assert "has uncommitted changes (app/main.py)" in output
    assert "app_release_allow_dirty" in output

    code, release, output = build(tmp_path, checkout, app_release_allow_dirty=True)
    assert code == 0, output
    commit = git(checkout, "rev-parse", "--short=12", "HEAD")
    assert release.startswith(f"1.2.3+g{commit}.dirty.")
    archive = tmp_path / "cache" / f"webstack-{release}.tar.gz"
    with tarfile.open(archive) as tar:
        main = tar.extractfile("app/main.py")
        assert main is not None and main.read() == b"VALUE = 2\n"
    # Another edit is another release.
    (checkout / "app" / "main.py").write_text("VALUE = 3\n")
    assert build(tmp_path, checkout, app_release_allow_dirty=True)[1] != release
