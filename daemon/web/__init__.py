"""The daemon's self-description on the HTTP door: the web page (``GET /`` and its static files
under ``/web/``), the OpenAPI document (``GET /openapi.json``) and the recent rows of the usage
log the page shows (``GET /api/usage/recent``).

The page is plain HTML, CSS and JavaScript shipped in the package (``static/``): no CDN, no
build step. It calls the same API as any client, with the key the user types; nothing here runs
on a request path unless the page is open and polling.
"""

from hfd.daemon.web.routes import routes

__all__ = ["routes"]
