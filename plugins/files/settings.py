"""The files plugin's settings: its ``[plugins.files]`` section (``schemas/config.json``), read
once per application.

Sizes are written like the core's (``10MiB``, ``1GiB`` or a number of bytes). ``UPLOAD_PATH``
unset means ``<data dir>/uploads``, beside the rest of the node's runtime state: the local
backend's files live there, and with any backend the spool of uploads still arriving.

``FILES_STORAGE`` picks the backend; ``FILES_STORAGE_BACKEND`` (the older name) is read when it
is not set. The ``s3_*`` settings matter only with ``FILES_STORAGE=s3``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from vachat.plugin_api import App, parse_size

__all__ = ["FilesSettings", "S3Settings", "settings_of", "PLUGIN"]

PLUGIN = "files"
# An avatar's largest picture: 16 megapixels (a 4:3 phone photo is 12) takes at most 64 MiB
# decoded, and avatars are decoded one at a time.
DEFAULT_AVATAR_PIXELS = 16_000_000


@dataclass(frozen=True)
class S3Settings:
    endpoint: str | None  # None: AWS itself
    bucket: str
    region: str
    access_key: str | None  # None: botocore's own chain (AWS_* variables, an instance role)
    secret_key: str | None
    prefix: str  # "" or ends with "/"

    def __repr__(self) -> str:  # never print the secret
        return (f"S3Settings(endpoint={self.endpoint!r}, bucket={self.bucket!r}, region={self.region!r}, "
                f"prefix={self.prefix!r})")


@dataclass(frozen=True)
class FilesSettings:
    upload_path: Path
    max_file_size: int
    user_quota: int
    max_avatar_size: int
    max_avatar_pixels: int
    storage: str  # "local", "s3", or another plugin's service
    s3: S3Settings | None


def settings_of(app: App) -> FilesSettings:
    """This application's files settings (computed once, kept in the plugin's state)."""
    state = app.plugin_state(PLUGIN)
    settings = getattr(state, "settings", None)
    if settings is None:
        section = app.plugin_config(PLUGIN)
        upload_path = section.get("upload_path") or str(Path(app.config.data_dir) / "uploads")
        storage = section.get("storage") or section.get("storage_backend") or "local"
        settings = state.settings = FilesSettings(
            upload_path=Path(upload_path).expanduser().resolve(),
            max_file_size=parse_size(section.get("max_file_size", "10MiB")),
            user_quota=parse_size(section.get("user_quota", "1GiB")),
            max_avatar_size=parse_size(section.get("max_avatar_size", "2MiB")),
            max_avatar_pixels=int(section.get("max_avatar_pixels", DEFAULT_AVATAR_PIXELS)),
            storage=storage,
            s3=_s3_settings(section) if storage == "s3" else None,
        )
    return settings


def _s3_settings(section: Mapping[str, Any]) -> S3Settings:
    prefix = (section.get("s3_prefix") or "").strip("/")
    return S3Settings(
        endpoint=section.get("s3_endpoint") or None,
        bucket=section.get("s3_bucket") or "",
        region=section.get("s3_region") or "us-east-1",
        access_key=section.get("s3_access_key") or None,
        secret_key=section.get("s3_secret_key") or None,
        prefix=f"{prefix}/" if prefix else "",
    )
