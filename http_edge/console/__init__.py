"""The console (SPEC §12): see ``views``."""

from http_edge.console.views import setup

__all__ = ["setup"]
