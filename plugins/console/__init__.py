"""console: a web console at ``/console`` (the built-in ``console`` plugin) — sign up or in,
conversations, chat with the assistant streaming in, files, and for administrators the
dashboard, users and the audit log.

Plain HTML, CSS and JavaScript from ``static/``, served by this server: no build step, no CDN.
The page's policy allows only this server's scripts and styles (no inline script) and
connections to this origin; the script puts every user-supplied text on the page as text,
never as HTML. It talks to the same REST API and WebSocket as any other client.

``CONSOLE_ENABLED`` (default: on, except in production): off, ``/console`` is a 404.
"""

from __future__ import annotations

from pathlib import Path
from vachat.plugin_api import ApiHandler, App, AssetHandler, Route, endpoint, hookimpl

__version__ = "1.0.0"

PLUGIN = "console"
STATIC = Path(__file__).resolve().parent / "static"
CONSOLE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
# The page's files, by the name it asks for; nothing else is served.
ASSETS = ("console.js", "console.css")


def enabled(app: App) -> bool:
    setting = app.plugin_config(PLUGIN).get("enabled")
    return (app.config.env != "production") if setting is None else bool(setting)


class ConsolePageHandler(ApiHandler):
    @endpoint("The web console (HTML)", auth=False, tags=("console",))
    async def get(self) -> None:
        self.set_header("Content-Security-Policy", CONSOLE_CSP)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish((STATIC / "index.html").read_bytes())


@hookimpl
def vachat_routes(app: App) -> list[Route]:
    if not enabled(app):
        return []
    return [
        (r"/console/?", ConsolePageHandler),
        (r"/console/assets/(.*)", AssetHandler, {"assets": {name: STATIC / name for name in ASSETS},
                                                 "csp": CONSOLE_CSP}),
    ]
