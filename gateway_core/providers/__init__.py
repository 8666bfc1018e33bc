"""Providers: one module per kind of upstream, registered by name (see ``base.register``)."""

from gateway_core.providers import generic_http, mlflow_serving, mock, openai_compat, tei, tgi

__all__ = ["generic_http", "mlflow_serving", "mock", "openai_compat", "tei", "tgi"]
