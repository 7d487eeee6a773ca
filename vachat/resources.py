"""Where the core's shipped files are: its JSON schemas, its migrations, its default configuration.

In a checkout (and an editable install, which runs the checkout) they are the top-level
``schemas/``, ``migrations/`` and ``conf/default.toml`` beside the ``vachat`` package. A built
wheel carries copies inside the package, under ``vachat/_resources/`` (``setup.py`` puts them
there), because a top-level ``schemas`` or ``conf`` in site-packages would collide with anything
else so named. Both are found from this file's location, never from the current directory.

Like ``config``, this module imports nothing else from vachat.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["core_resource", "BUNDLED_RESOURCES"]

# The folder, inside the installed package, that setup.py's build step fills.
BUNDLED_RESOURCES = "_resources"
PACKAGE_DIR = Path(__file__).resolve().parent


def core_resource(relative: str) -> Path:
    """The core's file or folder ``relative`` (``"schemas"``, ``"conf/default.toml"``).

    The wheel's bundled copy when there is one, else the checkout's; the caller sees a missing
    file as it would anywhere else (the path is returned either way).
    """
    bundled = PACKAGE_DIR / BUNDLED_RESOURCES / relative
    return bundled if bundled.exists() else PACKAGE_DIR.parent / relative
