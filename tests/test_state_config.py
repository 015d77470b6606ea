"""`[state]` selects the store: SQLite by default, PostgreSQL with a DSN and a password
secret; check-config says clearly what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config.model import ConfigError, parse_config
from gateway.store.factory import make_store
from gateway.store.sqlite import SqliteStore


def _errors(data: dict[str, Any], base: Path = Path(".")) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, base)
    return caught.value.errors


def test_sqlite_stays_the_default() -> None:
    """Without a backend the store is the SQLite file in the state folder."""
    config = parse_config({"state": {"dir": "/tmp/x"}})
    assert config.state.backend == "sqlite"
    assert isinstance(make_store(config), SqliteStore)


def test_postgresql_needs_its_section() -> None:
    """backend = "postgresql" without [state.postgresql] is refused with the path named."""
    assert _errors({"state": {"backend": "postgresql"}}) == [
        "state: backend 'postgresql' needs a [state.postgresql] section with a dsn"
    ]


def test_a_password_in_the_dsn_is_refused() -> None:
    """The password belongs in a secret, never in the DSN (which may be logged or shown)."""
    errors = _errors(
        {
            "state": {
                "backend": "postgresql",
                "postgresql": {"dsn": "host=db user=gw password=hunter2"},
            }
        }
    )
    assert len(errors) == 1 and errors[0].startswith("state.postgresql.dsn: put the password")
    assert "hunter2" not in errors[0]


def test_an_unparsable_dsn_is_refused_without_echoing_it() -> None:
    """A DSN libpq cannot parse is named as such, without repeating its text."""
    errors = _errors(
        {"state": {"backend": "postgresql", "postgresql": {"dsn": "host='db secret-ish"}}}
    )
    assert errors == [
        "state.postgresql.dsn: not a valid libpq connection string or postgresql:// URL"
    ]


def test_a_missing_password_file_is_reported(tmp_path: Path) -> None:
    """The password secret file is read at check time, like every other credential."""
    errors = _errors(
        {
            "state": {
                "backend": "postgresql",
                "postgresql": {"dsn": "host=db user=gw", "password": {"file": "pg-password"}},
            }
        },
        tmp_path,
    )
    assert errors == [
        "state.postgresql.password.file: cannot read secret file (No such file or directory)"
    ]


def test_matrix_encryption_is_accepted_with_postgresql() -> None:
    """Several nodes share the Matrix crypto store through the database (it moves with the
    `matrix` lease), so encryption = "on" with PostgreSQL is a valid configuration."""
    config = parse_config(
        {
            "state": {"backend": "postgresql", "postgresql": {"dsn": "host=db"}},
            "matrix": {
                "homeserver": "https://m.example",
                "user_id": "@gw:m.example",
                "incidents_room": "!r:m.example",
                "access_token": {"value": "t"},
                "encryption": "on",
                "pickle_key": {"value": "0123456789abcdef0123"},
                "engineers": ["@eng:m.example"],
            },
        }
    )
    assert config.matrix is not None and config.matrix.encryption == "on"


def test_postgresql_store_is_built_with_the_secret(tmp_path: Path) -> None:
    """With the backend set, the store is PostgreSQL's, its password read from the file."""
    (tmp_path / "pg-password").write_text("s3cret\n")
    config = parse_config(
        {
            "state": {
                "backend": "postgresql",
                "postgresql": {
                    "dsn": "host=db.example dbname=gw user=gw",
                    "password": {"file": "pg-password"},
                    "node": "node-a",
                },
            }
        },
        tmp_path,
    )
    store = make_store(config)
    assert type(store).__name__ == "PostgresStore"
    assert getattr(store, "node", "").startswith("node-a:")
