"""The webhooks plugin's settings: its ``[plugins.webhooks]`` section (``schemas/config.json``),
read once per application."""

from __future__ import annotations

from dataclasses import dataclass

from vachat.plugin_api import App

__all__ = ["WebhooksSettings", "settings_of", "PLUGIN"]

PLUGIN = "webhooks"


@dataclass(frozen=True)
class WebhooksSettings:
    #: Seconds before each retry after a failure; the first attempt is immediate.
    retry_schedule: tuple[float, ...]
    disable_after: float
    allow_private: bool
    timeout: float
    max_per_user: int


def settings_of(app: App) -> WebhooksSettings:
    state = app.plugin_state(PLUGIN)
    settings = getattr(state, "settings", None)
    if settings is None:
        section = app.plugin_config(PLUGIN)
        schedule = section.get("retry_schedule", "5,300,1800,7200,18000,36000,36000")
        settings = state.settings = WebhooksSettings(
            retry_schedule=tuple(float(part) for part in schedule.split(",")),
            disable_after=float(section.get("disable_after", 86400)),
            allow_private=bool(section.get("allow_private", False)),
            timeout=float(section.get("timeout", 10)),
            max_per_user=int(section.get("max_per_user", 20)),
        )
    return settings
