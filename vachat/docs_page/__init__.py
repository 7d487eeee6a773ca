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

from ..web import ApiHandler, AssetHandler, endpoint

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


DOCS_ROUTES: list[tuple[Any, ...]] = [
    (r"/api/docs", DocsPageHandler),
    (r"/api/docs/assets/(.*)", AssetHandler, {"assets": _ASSETS, "csp": DOCS_PAGE_CSP, "max_age": _ASSET_MAX_AGE}),
]
