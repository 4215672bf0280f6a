"""The HTTP API: routers, dependencies and error handlers."""
