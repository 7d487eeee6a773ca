"""A non-editable install works: a wheel built from this source tree, installed into a fresh
virtualenv, serves ``/health`` from an unrelated directory and keeps its state in ``./var`` there.

The wheel is built from a clean copy of the tree (an in-tree build would reuse whatever a
previous build left in ``build/``), with a throwaway built-in plugin added to the copy so the
``plugins/<name>/schemas`` and ``migrations`` globs are exercised. Dependencies come from pip's
usual indexes and cache; vachat itself, code and data, can only come from the wheel.
"""

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from vachat.testing import eventually, free_port

SOURCE_ROOT = Path(__file__).resolve().parents[2]
# Not part of a build: environments, caches, earlier build output, runtime state.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", "node_modules", "var", "*.db", "*.log")
PROBE_PLUGIN = {
    "plugins/packagingprobe/__init__.py": '"""Exists only to show that plugin data ships."""\n',
    "plugins/packagingprobe/schemas/nested/thing.json": '{"type": "object"}\n',
    "plugins/packagingprobe/migrations/001_nothing.py": "def migrate(migrator, database, **kwargs):\n    pass\n",
}
# Building (isolated, so setuptools is fetched), installing the dependencies, starting up.
STEP_TIMEOUT = 120
SERVER_START_TIMEOUT = 30


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=STEP_TIMEOUT, **kwargs)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source") / "vachat"
    shutil.copytree(SOURCE_ROOT, source, ignore=NOT_SOURCE)
    for relative, text in PROBE_PLUGIN.items():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_text(text)
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(source)])
    (built,) = out.glob("vachat-*.whl")
    return built


@pytest.fixture(scope="module")
def venv_python(wheel, tmp_path_factory) -> Path:
    """A new virtualenv (no system site-packages) with the wheel and its dependencies installed."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    # This environment's pip, run for the new interpreter: saves bootstrapping a second pip.
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", str(wheel)])
    return python


def clean_environment(home: Path, **extra: str) -> dict[str, str]:
    """No PYTHONPATH, no VACHAT_* or DATABASE_URL from the test run: only what a user would set."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), **extra}


def test_the_wheel_ships_the_core_and_plugin_data_inside_packages(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for relative in ("schemas/error.json", "schemas/auth/login.json", "migrations/001_accounts.py",
                     "conf/default.toml"):
        assert f"vachat/_resources/{relative}" in names
    for relative in PROBE_PLUGIN:
        assert relative in names
    # Nothing generic such as "schemas" or "conf" lands at the top of site-packages.
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {"vachat", "plugins"}


def test_the_example_plugin_wheel_ships_its_schemas_and_migrations(tmp_path):
    example = SOURCE_ROOT / "examples" / "vachat-example-plugin"
    shutil.copytree(example, tmp_path / "example", ignore=NOT_SOURCE)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path / "out"),
         str(tmp_path / "example")])
    (built,) = (tmp_path / "out").glob("*.whl")
    shipped = set(zipfile.ZipFile(built).namelist())
    package = example / "vachat_example"
    data = {path.relative_to(example).as_posix() for folder in ("schemas", "migrations")
            for path in (package / folder).rglob("*.*") if "__pycache__" not in path.parts}
    assert "vachat_example/schemas/echo.json" in data and "vachat_example/migrations/001_create_notes.py" in data
    assert data <= shipped, data - shipped


def test_installed_wheel_serves_health_from_another_directory(venv_python, tmp_path):
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    port = free_port()
    env = clean_environment(tmp_path, PORT=str(port), HOST="127.0.0.1")

    where = run([str(venv_python), "-c", "import vachat, vachat.resources as r; "
                 "print(vachat.__file__); print(r.core_resource('schemas'))"], cwd=workdir, env=env)
    # The vachat of this test run (the checkout, installed editable) must not be what runs.
    installed = venv_python.parent.parent.resolve() / "lib"
    module_file, schemas = (Path(line).resolve() for line in where.stdout.split())
    assert module_file.is_relative_to(installed), module_file
    assert schemas.is_relative_to(installed) and (schemas / "error.json").is_file(), schemas

    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen([str(venv_python.parent / "vachat"), "serve"], cwd=workdir, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        report = wait_for_health(f"http://127.0.0.1:{port}/health", server, tmp_path / "server.log")
        assert report["status"] == "healthy"
        assert (workdir / "var" / "vachat.db").is_file()
        assert (workdir / "var" / "secrets.json").is_file()
        assert (workdir / "var" / "log" / "vachat.log").is_file()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
        log.close()


def wait_for_health(url: str, server: subprocess.Popen, log_path: Path) -> dict:
    def probe() -> dict | None:
        if server.poll() is not None:
            pytest.fail(f"server exited with {server.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.load(response)
        except (urllib.error.URLError, ConnectionError):
            return None  # not listening yet

    try:
        return asyncio.run(eventually(lambda: asyncio.to_thread(probe), SERVER_START_TIMEOUT, "/health", interval=0.1))
    except AssertionError as error:
        pytest.fail(f"{error}:\n{log_path.read_text(errors='replace')}")
