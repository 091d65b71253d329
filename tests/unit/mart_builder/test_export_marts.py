"""`salesflow marts export` on an SQLite file (no network): the two marts and the anomaly flags
(schema 3), in both formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from mart_builder.db import make_engine
from mart_builder.export import export
from mart_builder.schema import migrate
from mart_builder.writer import MartWriter
from salesflow.settings import Settings
from tests.anomaly_flags import FLAGS, insert_flags


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_writes_the_two_marts_and_the_flags(tmp_path: Path, fmt: str) -> None:
    engine = make_engine(Settings(_env_file=None,  # type: ignore[call-arg]
                                  mart_db_url=f"sqlite:///{tmp_path / 'marts.db'}"))
    migrate(engine)
    insert_flags(engine)
    done = export(MartWriter(engine), tmp_path / "out", fmt)
    engine.dispose()
    assert [d.table for d in done] == ["customers_data_mart", "sales_team_data_mart",
                                       "sales_anomalies"]
    assert [d.rows for d in done] == [0, 0, len(FLAGS)]
    assert all(d.path.exists() for d in done)
