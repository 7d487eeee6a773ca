"""The interactive API reference at ``/api/docs``: Swagger UI over ``/api/openapi.json``.

Swagger UI's files come from the ``swagger-ui-py`` package's bundled copy and are served by
this server: the page loads nothing from anywhere else, so it works on a machine with no
internet. No validator badge (``validatorUrl: null``: it would send the document to
swagger.io) and no web fonts. "Try it out" sends requests to this server with the token given
under "Authorize" (a bearer access token or an ``X-API-Key``).

Only these routes relax the API's ``default-src 'none'`` policy, and only as far as the page
needs: its own scripts and styles (Swagger UI sets inline style attributes), ``data:`` images
(its icons), and requests to this origin. The initializer is a file (``init.js``), not an
inline script.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import swagger_ui
import tornado.web

from ..web import ApiHandler, endpoint

__all__ = ["DOCS_ROUTES", "DOCS_PAGE_CSP"]

DOCS_PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                 "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
_HERE = Path(__file__).resolve().parent
_SWAGGER_UI = Path(swagger_ui.__file__).resolve().parent / "static"
# The files the page uses, by the name it asks for: nothing else of either folder is served.
_ASSETS = {
    "swagger-ui.css": _SWAGGER_UI / "swagger-ui.css",
    "swagger-ui-bundle.js": _SWAGGER_UI / "swagger-ui-bundle.js",
    "favicon-32x32.png": _SWAGGER_UI / "favicon-32x32.png",
    "init.js": _HERE / "init.js",
}
# Assets change only with an upgrade; browsers may keep them a day (and revalidate by ETag).
_ASSET_MAX_AGE = 24 * 3600


class DocsPageHandler(ApiHandler):
    @endpoint("Interactive API reference (Swagger UI)", auth=False, tags=("documentation",))
    async def get(self) -> None:
        self.set_header("Content-Security-Policy", DOCS_PAGE_CSP)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.render(str(_HERE / "docs.html"), version=self.application.version)


class DocsAssetHandler(tornado.web.StaticFileHandler):
    """One of ``_ASSETS``, with the docs page's policy; anything else is 404."""

    @classmethod
    def get_absolute_path(cls, root: str, path: str) -> str:
        asset = _ASSETS.get(path)
        return str(asset) if asset is not None else str(Path(root) / "missing")

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        if absolute_path not in {str(p) for p in _ASSETS.values()}:
            raise tornado.web.HTTPError(404)
        return absolute_path

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Content-Security-Policy", DOCS_PAGE_CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", f"public, max-age={_ASSET_MAX_AGE}")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish({"success": False, "error": "Not found", "code": "NOT_FOUND"})


DOCS_ROUTES: list[tuple[Any, ...]] = [
    (r"/api/docs", DocsPageHandler),
    (r"/api/docs/assets/(.*)", DocsAssetHandler, {"path": str(_HERE)}),
]
