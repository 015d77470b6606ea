"""Configuration of the shared PostgreSQL store (`[state.postgresql]`), for several nodes.

The DSN says where (libpq keywords or a URL: several hosts with
`target_session_attrs=read-write` follow a failover); the password is a secret like every
other credential, never part of the DSN.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from gateway.config.base import Secret, _Model


class PostgresConfig(_Model):
    """Where the shared store lives and how this node uses it."""

    dsn: str = Field(min_length=1)
    password: Secret | None = None
    node: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    pool_size: int = Field(default=8, ge=2, le=64)
    connect_timeout_s: float = Field(default=5.0, gt=0, le=60)
    lease_s: float = Field(default=6.0, ge=2, le=300)
    claim_s: float = Field(default=90.0, ge=5, le=3600)

    @field_validator("dsn")
    @classmethod
    def _parses(cls, value: str) -> str:
        from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415  (only when used)

        try:
            params = conninfo_to_dict(value)
        except Exception:  # the library's message may echo the DSN: say it plainly
            raise ValueError("not a valid libpq connection string or postgresql:// URL") from None
        if "password" in params:
            raise ValueError(
                "put the password in 'password' (a secret, e.g. { file = ... }), not in the DSN"
            )
        return value
