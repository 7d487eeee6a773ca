"""Real processes: the ``vachat users`` commands, and a disabled user refused and disconnected
on another node (PostgreSQL + Redis)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from vachat.testing import assert_error, eventually, needs_shared_services, open_websocket, TEST_REFRESH_SECRET, TEST_SECRET

# plugins/admin/tests/<this file> → the repository, where run.py is.
PROJECT_ROOT = Path(__file__).resolve().parents[3]



async def run_cli(app: Any, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "VACHAT_ENV": "test", "DATABASE_URL": app.config.database_url,
           "REDIS_URL": app.config.redis_url, "JWT_SECRET": TEST_SECRET, "JWT_REFRESH_SECRET": TEST_REFRESH_SECRET,
           "LOG_DIR": ""}
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(PROJECT_ROOT / "run.py"), *args, env=env, cwd=str(PROJECT_ROOT),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None  # communicate() waited for the exit
    return process.returncode, out.decode(), err.decode()


@pytest.mark.gen_test(timeout=120)
async def test_users_commands_list_disable_and_grant_roles(app, fetch, make_user, admin_user):
    ada = await make_user(email="ada@cli.test", first_name="Ada")
    await make_user(email="bob@cli.test", tier="pro")
    await make_user(role="support", permissions=["users.read"])

    status, out, err = await run_cli(app, "users", "list", "--search", "cli.test")
    assert status == 0, err
    assert "ada@cli.test" in out and "bob@cli.test" in out and admin_user.email not in out
    assert "2 of 2 shown" in out

    status, out, err = await run_cli(app, "users", "grant-role", "ADA@cli.test", "support")
    assert (status, out.strip()) == (0, "ADA@cli.test: role support"), err
    assert (await fetch("/api/admin/users", user=ada)).code == 200  # support holds users.read
    status, _, err = await run_cli(app, "users", "grant-role", "ada@cli.test", "no-such-role")
    assert status == 1 and "no role named 'no-such-role'" in err

    status, out, err = await run_cli(app, "users", "disable", "ada@cli.test")
    assert status == 0 and "disabled" in out, err
    user = (await fetch(f"/api/admin/users/{ada.id}", user=admin_user)).data
    assert user["isActive"] is False
    assert [e["action"] for e in (await fetch(f"/api/admin/audit-logs?userId={ada.id}", user=admin_user)).data][:2] \
        == ["user.disabled", "user.role_changed"]
    status, out, _ = await run_cli(app, "users", "list", "--inactive")
    assert "ada@cli.test" in out and "bob@cli.test" not in out

    status, _, err = await run_cli(app, "users", "disable", "nobody@cli.test")
    assert status == 1 and "no account" in err
    status, _, err = await run_cli(app, "users", "disable", admin_user.email)
    assert status == 1 and "last active administrator" in err
    status, _, err = await run_cli(app, "users")
    assert status == 2 and "action" in err


@needs_shared_services
@pytest.mark.gen_test(timeout=120)
async def test_disabling_on_one_node_refuses_the_token_and_closes_the_socket_on_another(
        server_process, make_user, admin_user):
    ada = await make_user()
    first, second = server_process(), server_process()
    await asyncio.gather(first.wait_ready(), second.wait_ready())
    socket = await open_websocket(second.ws_url, ada.auth_headers)
    await socket.receive("ready")
    assert (await second.fetch("/api/auth/me", headers=ada.auth_headers)).code == 200  # cached there now
    # The socket on the second node is counted on the first, once the second has published its
    # count (every PUBLISH_INTERVAL_SECONDS).
    async def counted():
        return (await first.fetch("/api/admin/dashboard", headers=admin_user.auth_headers)).data["sockets"]["live"] == 1

    await eventually(counted, 10, "the first node to count the second's socket", interval=0.2)

    response = await first.fetch(f"/api/admin/users/{ada.id}", method="PUT", json={"isActive": False},
                                 headers=admin_user.auth_headers)
    assert response.code == 200, response.body
    code, _ = await socket.closed(timeout=10)
    assert code == 4401
    assert_error(await second.fetch("/api/auth/me", headers=ada.auth_headers), 401, "UNAUTHORIZED")
    figures = (await second.fetch("/api/admin/dashboard", headers=admin_user.auth_headers)).data
    assert figures["sockets"]["live"] == 0
    for server in (first, second):
        server.terminate()
    assert [await first.wait_exit(), await second.wait_exit()] == [0, 0]
