"""Traffic management between the servicers and the providers (SPEC §10).

Providers say how to talk to one endpoint. This package decides which endpoint serves an attempt
(``pool``), whether a request may start now (``admission``), how many attempts it gets and when
to give up (``router``), and keeps each endpoint's load and health fresh off the request path
(``poller``).
"""
