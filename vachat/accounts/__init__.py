"""Accounts: who a caller is and what they may do (SPEC §4 Auth, Users, Roles; §8).

The core's own plugin (registered first in ``CORE_PLUGINS``) implementing authentication for
REST and WebSocket, with these modules:

- ``models``       users, roles, sessions, one-time tokens, API keys, audit log, preferences
- ``passwords``    policy, common-password list, bcrypt off the IOLoop, the >72-byte rule
- ``tokens``       access/refresh JWTs (pinned HS256, typed, bound to a session)
- ``sessions``     sessions, refresh rotation with reuse detection, revocation, the hot-path cache
- ``apikeys``      API key creation, hashing and lookup
- ``audit``        audit-log rows
- ``limits``       RATE_LIMIT_AUTH per IP and per account
- ``rbac``         ``requires("perm")`` for REST methods and WebSocket events
- ``auth_handlers`` the ``/api/auth`` routes
- ``recovery``, ``profile``, ``mail`` (password reset, e-mail verification, ``/api/users``)
- ``plugin``       the hook implementations; ``commands`` the ``seed``/``create-admin`` CLI

Importing this package imports nothing else, so the CLI can probe for it cheaply.
"""
