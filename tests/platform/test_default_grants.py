"""Default grants: a plugin's ``Permission(name, grant_to=("user",))`` reaches the role once,
when the database first sees the permission, and an operator's revoke stays; ``vachat roles``
lists, grants and revokes without the API."""

import subprocess
import sys
from pathlib import Path

import pytest

from vachat.accounts.grants import apply_default_grants
from vachat.plugin_api import Permission

pytestmark = pytest.mark.vachat(plugins=["example"])

RUN_PY = Path(__file__).resolve().parents[2] / "run.py"


async def role_permissions(app, name):
    return next(role["permissions"] for role in await app.accounts.list_roles() if role["name"] == name)


@pytest.mark.gen_test
async def test_the_example_route_answers_a_plain_user(fetch, make_user):
    user = await make_user()  # the built-in "user" role, nothing granted by hand
    created = await fetch("/api/example/notes", method="POST", json={"text": "mine"}, user=user)
    assert created.code == 201, created.json
    support = await make_user(role="support", permissions=[])  # a role the plugin did not name
    refused = await fetch("/api/example/notes", method="POST", json={"text": "no"}, user=support)
    assert refused.code == 403 and refused.json["code"] == "FORBIDDEN"


@pytest.mark.gen_test
async def test_a_default_grant_is_applied_once_and_a_revoke_stays(app, make_user):
    assert "example.write" in await role_permissions(app, "user")
    role_id = next(role["id"] for role in await app.accounts.list_roles() if role["name"] == "user")
    await app.accounts.update_role(role_id, permissions=[])  # the operator revokes it
    assert await app.db.run(apply_default_grants, app.default_grants) == {}  # the next start
    assert await role_permissions(app, "user") == []


@pytest.mark.gen_test
async def test_a_new_permission_is_granted_to_existing_roles_only(app):
    declared = {"example.read": ("user", "no-such-role"), "example.audit": ()}
    assert await app.db.run(apply_default_grants, declared) == {"user": ["example.read"]}
    assert await role_permissions(app, "user") == ["example.read", "example.write"]
    assert await role_permissions(app, "admin") == ["*"]  # "*" already covers it: left alone


def test_a_permission_checks_its_declaration():
    with pytest.raises(TypeError, match="grant_to is a tuple of role names"):
        Permission("notes.write", grant_to="user")
    with pytest.raises(ValueError):
        Permission("*")
    assert Permission.of(("notes.read", "Read notes")) == Permission("notes.read", "Read notes")


def run(tmp_path, *args):
    environment = {"PATH": "/usr/bin:/bin", "LOG_DIR": "", "VACHAT_ENV": "test",
                   "DATABASE_URL": f"sqlite:///{tmp_path / 'roles.db'}"}
    return subprocess.run([sys.executable, str(RUN_PY), *args], env=environment, capture_output=True,
                          text=True, timeout=60, cwd=str(tmp_path))


def test_roles_commands_grant_and_revoke_and_a_revoke_survives_seed(tmp_path):
    seeded = run(tmp_path, "seed")
    assert seeded.returncode == 0 and "role user: granted example.write (default grants)" in seeded.stdout
    listed = run(tmp_path, "roles", "list")
    assert listed.returncode == 0
    assert any(line.split()[:1] == ["user"] and "example.write" in line for line in listed.stdout.splitlines())

    revoked = run(tmp_path, "roles", "revoke", "user", "example.write")
    assert revoked.returncode == 0 and revoked.stdout.strip() == "user: -"
    assert "granted" not in run(tmp_path, "seed").stdout  # seen before: not granted again
    assert run(tmp_path, "roles", "revoke", "user", "example.write").stdout.strip() == "user: already without example.write"

    granted = run(tmp_path, "roles", "grant", "user", "example.write")
    assert granted.returncode == 0 and granted.stdout.strip() == "user: example.write"

    for args, message in ((("grant", "user", "*"), "'*' (every permission) is only for the admin role"),
                          (("grant", "nobody", "example.write"), "no role named 'nobody'"),
                          (("grant", "user", "example.wrte"), "'example.wrte' is not a declared permission")):
        refused = run(tmp_path, "roles", *args)
        assert refused.returncode == 1 and message in refused.stderr, (args, refused.stderr)
    # The API's rules hold here too: the last active administrator keeps "*".
    assert run(tmp_path, "create-admin", "--email", "root@roles.test", "--password", "Correct-Horse-42!").returncode == 0
    refused = run(tmp_path, "roles", "revoke", "admin", "*")
    assert refused.returncode == 1 and "Refusing to remove '*'" in refused.stderr
