"""docs/hooks.md is the hooks reference generated from the hook specifications: it lists every
hook of the core and of the built-in plugins, and this test fails when the two drift."""

import subprocess
import sys
from pathlib import Path

from vachat.hooks_document import builtin_manager, builtin_plugins, render
from vachat.plugin_manager import PluginManager
from tests.plugins import offers

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "hooks.md"


def test_docs_hooks_md_is_what_the_specs_generate():
    assert DOCUMENT.read_text() == render(builtin_manager()), (
        "docs/hooks.md is out of date: regenerate it with `vachat hooks --builtin > docs/hooks.md`")


def test_every_hook_of_the_core_and_the_builtin_plugins_is_listed_with_its_arguments():
    manager = builtin_manager()
    assert set(builtin_plugins()) == {"admin", "ai", "chat", "console", "files", "openai_compat", "webhooks"}
    text = DOCUMENT.read_text()
    for name in manager.hook_owners:
        section = text.split(f"### `{name}(", 1)
        assert len(section) == 2, f"{name} is missing from docs/hooks.md"
        entry = section[1].split("\n### ", 1)[0]
        arguments = manager.arguments(name)
        assert all(f"`{argument}:" in entry for argument in arguments), name
        assert "- **Returns:**" in entry and "(undocumented)" not in entry
    assert {"chat_message_before_store", "chat_message_refused", "ai_before_request",
            "admin_dashboard_figures", "vachat_actor_from_request"} <= set(manager.hook_owners)
    assert "- **Answers:** first answer wins" in text.split("### `chat_generation_status(", 1)[1].split("###")[0]


def test_the_document_follows_the_specs_of_whatever_is_loaded():
    manager = PluginManager(strict=True)
    manager.load(extra=[("offers", offers)], only=[])
    text = render(manager)
    assert "## The `offers` plugin" in text and "### `offers_pick(app, choices)`" in text
    assert "The first listener that picks a choice wins." in text


def test_the_command_prints_the_document():
    result = subprocess.run([sys.executable, str(ROOT / "run.py"), "hooks", "--builtin"], capture_output=True,
                            text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "VACHAT_ENV": "test", "LOG_DIR": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout == DOCUMENT.read_text()
