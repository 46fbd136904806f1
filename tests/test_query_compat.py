"""``lake.sql()`` results and the DuckDB helpers behave the same on DuckDB 1.4 to 2.x:
``.arrow()`` is a Table (2.x relations stream), ``.fetchone()`` exists (2.x
relations have none), and a connection is left free for the next statement."""

from __future__ import annotations

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from matlake.platform.lake import ChangeSet
from matlake.platform.query import QueryError, Result, to_arrow_reader, to_arrow_table


def _lake_with_rows(lake, n: int = 5):
    cs = ChangeSet("test", "compat")
    act = cs.activity("ingest", "compat", "1")
    cs.add_rows("structures", [{"record_id": f"r{i}", "formula": f"Si{i + 1}", "nsites": i + 1} for i in range(n)],
                act)
    lake.commit(cs)
    return lake


def test_sql_result_gives_a_table_rows_and_a_frame(sqlite_lake):
    lake = _lake_with_rows(sqlite_lake)
    res = lake.sql("select record_id, nsites from structures order by record_id")
    table = res.arrow()
    assert isinstance(table, pa.Table)
    assert table.column("nsites").to_pylist() == [1, 2, 3, 4, 5]
    assert res.arrow().num_rows == 5  # a Table each time, not a one-shot stream
    assert res.fetchone() == ("r0", 1)
    assert res.fetchall()[-1] == ("r4", 5)
    frame = res.df()
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["record_id", "nsites"] == res.columns
    assert lake.sql("select * from structures where nsites > 99").fetchone() is None


def test_sql_result_streams_batches_of_the_asked_size(sqlite_lake):
    lake = _lake_with_rows(sqlite_lake, n=7)
    reader = lake.sql("select nsites from structures order by nsites").arrow_reader(batch_rows=3)
    assert isinstance(reader, pa.RecordBatchReader)
    sizes = [b.num_rows for b in reader]
    assert sum(sizes) == 7 and max(sizes) <= 3


def test_sql_with_params_and_a_catalog_view_after_a_fetchone(sqlite_lake):
    """A fetched-once result must not block registering a catalog view next
    (DuckDB 2 refuses work on a connection with an unfinished result)."""
    lake = _lake_with_rows(sqlite_lake)
    assert lake.sql("select formula from structures where record_id = ?", params=["r2"]).fetchone() == ("Si3",)
    assert lake.sql("select count(*) from activities").fetchone() == (1,)
    assert lake.sql("select count(*) from snapshots").fetchone() == (1,)


def test_statement_without_rows_gives_an_empty_result():
    empty = Result(None)
    assert empty.fetchone() is None and empty.fetchall() == [] and empty.columns == []
    assert empty.arrow().num_rows == 0 and empty.df().empty
    assert list(empty.arrow_reader()) == []


def test_bad_sql_is_a_query_error(sqlite_lake):
    with pytest.raises(QueryError, match="structurez"):
        sqlite_lake.sql("select * from structurez")


@pytest.mark.parametrize("source", ["relation", "executed connection"])
def test_arrow_helpers_accept_relations_and_executed_connections(source):
    con = duckdb.connect()
    query = "select range as i from range(10)"

    def make():
        return con.sql(query) if source == "relation" else con.execute(query)

    table = to_arrow_table(make())
    assert isinstance(table, pa.Table) and table.column("i").to_pylist() == list(range(10))
    batches = list(to_arrow_reader(make(), 4))
    assert sum(b.num_rows for b in batches) == 10 and max(b.num_rows for b in batches) <= 4
    con.register("t", table)  # the connection is free again
    assert con.execute("select sum(i) from t").fetchall() == [(45,)]
    con.close()


def test_arrow_helpers_refuse_what_is_not_duckdb():
    with pytest.raises(TypeError, match="expected a DuckDB relation or connection, found int"):
        to_arrow_table(3)
    with pytest.raises(TypeError, match="found str"):
        to_arrow_reader("x", 10)
