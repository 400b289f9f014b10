"""The store opens, migrates once under concurrency, and resolves its URL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from governance.errors import ConfigError
from governance.storage import migrations, revisions, schema
from governance.storage.store import ENV_STORE, Store, resolve_url
from tests.support.org import org_document

pytestmark = pytest.mark.integration


def test_replicas_starting_together_migrate_the_schema_once(store_url: str) -> None:
    code = "import sys; from governance.storage.store import Store; Store(sys.argv[1]).close()"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, store_url], stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    store = Store(store_url, migrate=False)
    try:
        assert migrations.current(store.engine) == migrations.head(store.engine)
        store.ping()
    finally:
        store.close()


def test_the_migrated_schema_is_the_declared_one(store_url: str) -> None:
    """Alembic's own comparison finds no difference between the tables the migrations
    build and :mod:`governance.storage.schema`."""
    store = Store(store_url)
    try:
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn)
            assert compare_metadata(context, schema.metadata) == []
    finally:
        store.close()


def test_usage_is_clustered_on_its_key_in_sqlite_and_keeps_its_rows_across_0002(
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'old.db'}", migrate=False)
    try:
        migrations.upgrade(store.engine, "0001")
        rows = [("department/a", 1, 2, 3), ("queue/a/q", 4, 5, 6), ("pool/p", 7, 8, 9)]
        with store.engine.begin() as conn:
            conn.execute(
                sa.insert(schema.usage),
                [
                    dict(zip(("scope", "slices", "memory_mib", "compute_pct"), r, strict=True))
                    for r in rows
                ],
            )

        def table_sql() -> str:
            with store.engine.connect() as conn:
                found: str = conn.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE name = 'usage'"
                ).scalar_one()
            return found

        def usage() -> list[tuple[str, int, int, int]]:
            with store.engine.connect() as conn:
                result = conn.execute(sa.select(schema.usage).order_by(schema.usage.c.scope))
                return [(r.scope, r.slices, r.memory_mib, r.compute_pct) for r in result]

        assert "WITHOUT ROWID" not in table_sql()
        migrations.upgrade(store.engine, "0002")
        assert migrations.current(store.engine) == "0002"
        assert "WITHOUT ROWID" in table_sql()
        assert usage() == sorted(rows)
        command.downgrade(migrations.alembic_config(store.engine), "0001")
        assert "WITHOUT ROWID" not in table_sql()
        assert usage() == sorted(rows)
    finally:
        store.close()


def test_revisions_name_who_applied_them_and_older_ones_migrate_to_unknown(
    store_url: str,
) -> None:
    store = Store(store_url, migrate=False)
    try:
        migrations.upgrade(store.engine, "0002")
        with store.engine.begin() as conn:  # a revision applied before 0003
            conn.exec_driver_sql(
                "INSERT INTO config_revisions (applied_at, checksum, source, document) "
                "VALUES ('2026-01-01 00:00:00+00:00', 'c', 'old.yaml', '{}')"
            )
        migrations.upgrade(store.engine)
        assert migrations.current(store.engine) == migrations.head(store.engine)
        assert [(r.source, r.applied_by) for r in store.config_history()] == [("old.yaml", "")]
        revisions.apply(store, org_document(), source="new.yaml", applied_by="user:ana")
        history = store.config_history()
        assert [(r.revision, r.source, r.applied_by) for r in history] == [
            (2, "new.yaml", "user:ana"),
            (1, "old.yaml", ""),
        ]
        assert store.latest_config() == history[0]
    finally:
        store.close()


def test_opening_a_sqlite_store_leaves_nothing_but_the_database(tmp_path: Path) -> None:
    """Migrations lock the directory, not a lock file that would stay behind."""
    Store(f"sqlite:///{tmp_path / 'gpupool.db'}").close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpupool.db"]


@pytest.mark.parametrize(
    "url", ["mysql://u@h/db", "postgresql+psycopg2://u@h/db", "oracle://h", "http://x/y"]
)
def test_an_unsupported_store_scheme_is_a_config_error_naming_the_supported(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_url(url)
    message = str(caught.value)
    assert repr(url.split("://")[0]) in message
    assert "sqlite:///" in message and "postgresql://" in message


def test_store_url_comes_from_the_flag_then_the_environment_then_a_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(ENV_STORE, raising=False)
    assert resolve_url(None) == "sqlite:///gpupool.db"
    monkeypatch.setenv(ENV_STORE, str(tmp_path / "env.db"))
    assert resolve_url(None) == f"sqlite:///{tmp_path / 'env.db'}"
    assert resolve_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert resolve_url("sqlite:///x.db") == "sqlite:///x.db"


def test_a_password_never_appears_in_store_messages(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        pg = Store("postgresql://user:secret@127.0.0.1:1/db", migrate=False)
        assert "secret" not in pg.safe_url
        pg.close()
    finally:
        store.close()


def _wal_bytes_after_writes(path: Path, interval_s: float) -> int:
    import time

    import sqlalchemy as sa

    from governance.storage import schema

    store = Store(f"sqlite:///{path}", checkpoint_interval_s=interval_s)
    try:
        for i in range(400):
            with store.write() as conn:
                conn.execute(
                    sa.insert(schema.usage).values(
                        scope=f"s/{i}", slices=i, memory_mib=0, compute_pct=0
                    )
                )
            if i % 50 == 0:
                time.sleep(0.1)  # give the checkpointer its turns
        return Path(f"{path}-wal").stat().st_size
    finally:
        store.close()


def test_sqlite_wal_is_checkpointed_off_the_commit_path(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        with store.read() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    finally:
        store.close()
    checkpointed = _wal_bytes_after_writes(tmp_path / "b.db", interval_s=0.02)
    never = _wal_bytes_after_writes(tmp_path / "c.db", interval_s=3600)
    # the background checkpoint lets SQLite restart the WAL from its beginning
    assert checkpointed * 3 < never, (checkpointed, never)
