"""The files plugin's settings: its ``[plugins.files]`` section (``schemas/config.json``), read
once per application.

Sizes are written like the core's (``10MiB``, ``1GiB`` or a number of bytes). ``UPLOAD_PATH``
unset means ``<data dir>/uploads``, beside the rest of the node's runtime state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vachat.plugin_api import App, parse_size

__all__ = ["FilesSettings", "settings_of", "PLUGIN"]

PLUGIN = "files"
# An avatar's largest picture: 16 megapixels (a 4:3 phone photo is 12) takes at most 64 MiB
# decoded, and avatars are decoded one at a time.
DEFAULT_AVATAR_PIXELS = 16_000_000


@dataclass(frozen=True)
class FilesSettings:
    upload_path: Path
    max_file_size: int
    user_quota: int
    max_avatar_size: int
    max_avatar_pixels: int
    storage_backend: str


def settings_of(app: App) -> FilesSettings:
    """This application's files settings (computed once, kept in the plugin's state)."""
    state = app.plugin_state(PLUGIN)
    settings = getattr(state, "settings", None)
    if settings is None:
        section = app.plugin_config(PLUGIN)
        upload_path = section.get("upload_path") or str(Path(app.config.data_dir) / "uploads")
        settings = state.settings = FilesSettings(
            upload_path=Path(upload_path).expanduser().resolve(),
            max_file_size=parse_size(section.get("max_file_size", "10MiB")),
            user_quota=parse_size(section.get("user_quota", "1GiB")),
            max_avatar_size=parse_size(section.get("max_avatar_size", "2MiB")),
            max_avatar_pixels=int(section.get("max_avatar_pixels", DEFAULT_AVATAR_PIXELS)),
            storage_backend=section.get("storage_backend", "local"),
        )
    return settings
