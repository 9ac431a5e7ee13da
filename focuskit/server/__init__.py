"""The HTTP service and web page: `create_app(ServerSettings(...))`, started by `focuskit serve`."""

from focuskit.server.app import create_app
from focuskit.server.settings import BackendSettings, ServerSettings

__all__ = ["BackendSettings", "ServerSettings", "create_app"]
