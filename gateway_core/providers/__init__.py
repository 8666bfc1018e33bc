"""Providers: one module per kind of upstream, registered by name (see ``base.register``)."""

from gateway_core.providers import mock, openai_compat

__all__ = ["mock", "openai_compat"]
