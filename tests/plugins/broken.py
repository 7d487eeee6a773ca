"""A plugin whose route declaration fails: the server must log it and carry on without it."""

from vachat.plugin_api import hookimpl


@hookimpl
def vachat_routes(app):
    raise RuntimeError("broken plugin cannot declare routes")
