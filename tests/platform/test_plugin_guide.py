"""The plugin author's guide works as written: its files, copied into a new project, build a
wheel that carries the plugin's data, and the plugin serves through the real server."""

import importlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
# Only the complete plugin is copied; later sections show fragments.
COMPLETE_PLUGIN_SECTION = re.compile(r"## The smallest complete plugin\n(.*?)\n## ", re.S)
FENCE = re.compile(r"(?:\*\*`(?P<named>[^`]+)`\*\*[^\n]*\n\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)


def guide_files() -> dict[str, str]:
    """``{relative path: text}`` of the guide's complete plugin: a block names its file in a
    first-line comment (``# mynotes/__init__.py``) or in bold just above it (JSON)."""
    section = COMPLETE_PLUGIN_SECTION.search(GUIDE.read_text()).group(1)
    files = {}
    for block in FENCE.finditer(section):
        body = block.group("body")
        first = body.split("\n", 1)[0]
        if block.group("named"):
            files[block.group("named")] = body
        elif first.startswith("# ") and first[2:].strip().endswith((".py", ".toml")):
            files[first[2:].strip()] = body
    return files


@pytest.fixture(scope="module")
def notes_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("mynotes-project")
    for relative, text in guide_files().items():
        target = project / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    (project / "mynotes" / "migrations" / "__init__.py").write_text("")
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "-w", str(dist), str(project)], check=True, timeout=120)
    return next(dist.glob("mynotes-*.whl"))


@pytest.fixture
def vachat_plugins(notes_wheel: Path, tmp_path: Path):
    unpacked = tmp_path / "site"
    zipfile.ZipFile(notes_wheel).extractall(unpacked)
    sys.path.insert(0, str(unpacked))
    try:
        yield [("notes", importlib.import_module("mynotes"))]
    finally:
        sys.path.remove(str(unpacked))
        for name in [name for name in sys.modules if name == "mynotes" or name.startswith("mynotes.")]:
            del sys.modules[name]


def test_the_guide_names_every_file_of_its_plugin():
    assert set(guide_files()) == {"pyproject.toml", "mynotes/__init__.py", "mynotes/schemas/create.json",
                                  "mynotes/schemas/config.json", "mynotes/migrations/001_create_notes.py"}


def test_the_guides_wheel_carries_its_schemas_and_migrations(notes_wheel):
    names = set(zipfile.ZipFile(notes_wheel).namelist())
    assert {"mynotes/__init__.py", "mynotes/schemas/create.json", "mynotes/schemas/config.json",
            "mynotes/migrations/001_create_notes.py"} <= names
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    assert "notes = mynotes" in zipfile.ZipFile(notes_wheel).read(entry_points).decode()


@pytest.mark.gen_test
async def test_the_guides_plugin_serves(app, fetch, ws_connect, make_user):
    assert app.plugins.is_enabled("notes"), app.plugins.plugins["notes"].error
    assert "migratehistory_notes" in app.db.engine.get_tables()
    assert app.plugin_config("notes")["max_notes"] == 1000
    socket = await ws_connect(user="alice")
    await socket.receive("ready")
    writer = {"Authorization": "Bearer test:alice", "X-Test-Permissions": "notes.write"}
    assert (await fetch("/api/notes", method="POST", json={"text": "hi"}, user="alice")).code == 403
    created = await fetch("/api/notes", method="POST", json={"text": "hi"}, headers=writer)
    assert created.code == 201
    assert (await socket.receive("notes-created"))["data"]["id"] == created.json["data"]["id"]
    assert (await socket.request("notes-count", {}))["data"] == {"count": 1}
    # grant_to=("user",): every signed-up account may write notes.
    assert (await fetch("/api/notes", method="POST", json={"text": "mine"}, user=await make_user())).code == 201
