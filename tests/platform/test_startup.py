"""Start-up: what stops it (exit 2, one clear line) and what it warns about, through a real
``vachat serve`` process.

A plugin whose configuration is invalid stops a production start and names the plugin; in
development the plugin is skipped and ``/health`` says so. A taken port stops start-up before
migrations run; ``PORT=abc`` is refused like every other bad value. In production the server
warns about a ``PUBLIC_URL`` on this machine and the ``echo`` AI provider.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from vachat.testing import TEST_REFRESH_SECRET, TEST_SECRET, free_port

# A start that stops on its configuration takes a second or two (imports); far more is a hang.
START_TIMEOUT = 60
PRODUCTION = {"VACHAT_ENV": "production", "JWT_SECRET": TEST_SECRET, "JWT_REFRESH_SECRET": TEST_REFRESH_SECRET,
              "BCRYPT_ROUNDS": "10"}


def serve_until_exit(tmp_path: Path, env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``vachat serve`` in ``tmp_path`` with a fresh SQLite database; (exit code, stdout, stderr)."""
    root = Path(__file__).resolve().parents[2]
    base = {
        "PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(root), "HOME": str(tmp_path),
        "VACHAT_ENV": "test", "DATABASE_URL": f"sqlite:///{tmp_path / 'start.db'}", "LOG_DIR": "",
        "HOST": "127.0.0.1", "PORT": str(free_port()), "AUTO_MIGRATE": "1",
    }
    done = subprocess.run([sys.executable, "-m", "vachat", "serve"], env={**base, **env}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=START_TIMEOUT)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("setting", ["env", "file"])
def test_an_invalid_plugin_configuration_stops_a_production_start(tmp_path, setting):
    if setting == "env":
        env = {"MAX_FILE_SIZE": "10 megs"}
    else:
        config = tmp_path / "vachat.toml"
        config.write_text('[plugins.files]\nmax_file_size = 1048576\nmax_file_sise = 5\n')
        env = {"VACHAT_CONFIG": str(config)}
    code, _, stderr = serve_until_exit(tmp_path, {**PRODUCTION, **env})
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "plugin files" in lines[0], stderr
    assert ("MAX_FILE_SIZE" in lines[0]) if setting == "env" else ("max_file_sise" in lines[0])
    assert not (tmp_path / "start.db").exists() or (tmp_path / "start.db").stat().st_size == 0


@pytest.mark.gen_test(timeout=90)
async def test_in_development_the_plugin_is_skipped_and_health_says_so(server_process):
    server = server_process({"VACHAT_ENV": "development", "MAX_FILE_SIZE": "10 megs"})
    await server.wait_ready()
    health = await server.fetch("/health")
    assert health.code == 503
    report = health.json
    assert report["status"] == "degraded"
    plugins = report["checks"]["plugins"]
    assert plugins["status"] == "down" and list(plugins["skipped"]) == ["files"]
    assert "MAX_FILE_SIZE" in plugins["skipped"]["files"]
    assert (await server.fetch("/api/files")).code == 404  # the plugin's routes are not there
    assert (await server.fetch("/health/ready")).code == 200  # it serves, without the plugin


def test_a_taken_port_stops_start_up_in_one_line_before_migrations(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code, _, stderr = serve_until_exit(tmp_path, {"PORT": str(port)})
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert str(port) in lines[0] and "PORT" in lines[0]
    assert not (tmp_path / "start.db").exists()  # nothing migrated


def test_a_port_that_is_not_a_number_is_a_configuration_error(tmp_path):
    code, _, stderr = serve_until_exit(tmp_path, {"PORT": "abc"})
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    # Worded like every other bad value: which setting, where it came from, what was wrong.
    assert lines[0].startswith("vachat: configuration error: invalid PORT (server.port) from environment "
                               "variable PORT: ")
    assert lines[0].endswith("got 'abc'") and "invalid literal" not in lines[0]


@pytest.mark.gen_test(timeout=90)
async def test_production_warns_about_a_local_public_url_and_the_echo_provider(server_process):
    server = server_process(PRODUCTION)
    await server.wait_ready()
    output = server.output()
    assert "PUBLIC_URL is http://127.0.0.1:" in output
    assert "AI_PROVIDER is echo" in output
    other = server_process({**PRODUCTION, "PUBLIC_URL": "https://chat.example.com", "AI_PROVIDER": "openai",
                            "AI_BASE_URL": "http://127.0.0.1:9/v1", "AI_MODEL": "m"})
    await other.wait_ready()
    assert "PUBLIC_URL is" not in other.output() and "AI_PROVIDER is echo" not in other.output()


@pytest.mark.gen_test(timeout=90)
async def test_a_serving_node_has_frozen_its_start_up_objects_out_of_the_collectors_walk(server_process):
    # Modules, plugins, schemas and routes live as long as the process: a full garbage
    # collection that walked them again would hold the IOLoop ~50 ms on every pass (bench/README).
    server = server_process({})
    await server.wait_ready()
    text = (await server.fetch("/metrics")).body.decode()
    frozen = [float(line.split()[1]) for line in text.splitlines() if line.startswith("vachat_gc_frozen_objects ")]
    assert frozen and frozen[0] > 0, text[:2000]
    assert 'python_gc_collections_total{generation="2"}' in text
