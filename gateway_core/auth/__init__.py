"""Access tokens, JWT, the admin service and usage accounting (SPEC.md §5).

``records`` holds the token format and the stored shapes, ``store`` the backend interface (with
``sqlite_store`` and ``postgres_store``), ``authenticator`` the hot-path check and its cache,
``jwt_auth`` the JWT verifier, ``interceptor`` the gRPC side, ``usage`` the accounting, ``admin``
the Admin servicer, and ``runtime`` wires them into the core.
"""
