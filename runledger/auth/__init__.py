"""Authentication and per-experiment permissions (docs/auth.md).

`permissions` (the four levels), `state` (the pure fold of the log's authentication facts),
`vault` (password and token hashes, kept outside the log), `tokens` (API token shape),
`authenticator` (credentials -> principal, constant-time, throttled), `rules` (what each route
needs, declared per room), `gate` (the ASGI middleware enforcing them), `access` (the caller's
rights, for handlers that filter), `service` (users, grants and tokens as commands).
"""
