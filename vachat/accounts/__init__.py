"""Accounts: who a caller is (users, sessions, API keys, the audit log).

The core's own plugin (registered first in ``CORE_PLUGINS``) implementing authentication for
REST and WebSocket. Users and authentication are the core's, not a plugin's, because every
request and socket depends on them: a server without them could not tell who may do what.
Role checks (``requires``) live in ``vachat.rbac``. Modules:

- ``models``       users, roles, sessions, one-time tokens, API keys, audit log, preferences
- ``passwords``    policy, common-password list, bcrypt off the IOLoop, the >72-byte rule
- ``tokens``       access/refresh JWTs (pinned HS256, typed, bound to a session)
- ``sessions``     sessions, refresh rotation with reuse detection, revocation, the hot-path cache
- ``apikeys``      API key creation, hashing and lookup
- ``audit``        audit-log rows
- ``limits``       RATE_LIMIT_AUTH per IP and per account
- ``users``        ``create_account``, shared by register, ``create-admin`` and the fixtures
- ``service``      ``app.accounts``: what plugins may do with users and sessions
- ``auth_handlers`` the ``/api/auth`` routes
- ``recovery``, ``profile``, ``mail`` (password reset, e-mail verification, ``/api/users``)
- ``plugin``       the hook implementations; ``commands`` the ``seed``/``create-admin`` CLI

Importing this package imports nothing else.
"""
