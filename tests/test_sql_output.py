"""Query results as text (fitted to a width) and query errors that keep DuckDB's hints."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from matlake.platform.display import format_frame
from matlake.platform.query import QueryError


def test_rows_fit_the_width_numbers_right_aligned_and_cells_on_one_line():
    df = pd.DataFrame({"name": ["Si", "GaN\nwurtzite"], "gap": [0.61, 3.2], "note": ["x" * 300, None]})
    lines = format_frame(df, width=60)
    assert all(len(line) <= 60 for line in lines) and len(lines) == 3
    header, si, gan = lines
    assert header.split() == ["name", "gap", "note"]
    assert "GaN\\nwurtzite" in gan  # a line break inside a cell stays inside the row
    # the numeric column is right-aligned: both values end in the same column
    assert si.index("0.61") + len("0.61") == gan.index("3.2") + len("3.2")
    assert si.endswith("…") and gan.split()[-1] in ("None", "NaN")  # pandas versions differ on missing text


def test_columns_that_do_not_fit_are_named_in_a_note():
    df = pd.DataFrame({f"column_{i}": [i * 1000] for i in range(20)})
    lines = format_frame(df, width=40)
    assert lines[0].split() == ["column_0", "column_1", "column_2", "column_3"]  # 4 x 8 + 3 x 2 = 38
    assert lines[-1].startswith("16 more columns: column_4, column_5") and len(lines[-1]) <= 40
    wide = format_frame(df, wide=True, width=40)
    assert len(wide) == 2 and len(wide[0].split()) == 20


def test_one_column_wider_than_the_screen_is_cut_not_dropped():
    lines = format_frame(pd.DataFrame({"structure_json": ["{" + "a" * 500 + "}"]}), width=30)
    assert len(lines) == 2 and len(lines[1]) == 30 and lines[1].endswith("…")


def test_spare_width_goes_to_cut_columns():
    df = pd.DataFrame({"a": ["x" * 70], "b": [1]})
    assert format_frame(df, width=100)[1].startswith("x" * 70)  # 70 > the 40-character cap, but there is room
    assert format_frame(df, width=50)[1].startswith("x" * 46 + "… ")


def test_floats_lists_and_missing_values_read_naturally():
    df = pd.DataFrame({"e": [-1234.5678, 1e-7, math.nan], "z": [[1.5, 2.0], [], None]})
    lines = format_frame(df, width=80)
    assert lines[1].split()[:1] == ["-1234.5678"] and "[1.5, 2]" in lines[1]
    assert lines[2].split() == ["1e-07", "[]"] and lines[3].split() == ["NaN", "None"]


def test_rows_beyond_max_rows_are_counted():
    lines = format_frame(pd.DataFrame({"n": range(10)}), max_rows=3, width=80)
    assert [line.strip() for line in lines[1:4]] == ["0", "1", "2"]
    assert lines[-1] == "(10 rows, 3 shown; --max-rows N for more)"
    assert format_frame(pd.DataFrame({"n": []}), width=80) == ["(no rows)"]


def test_lake_sql_errors_keep_candidate_bindings_and_did_you_mean(sqlite_lake):
    with pytest.raises(QueryError) as exc:
        sqlite_lake.sql("select formla from structures")
    first, *hints = str(exc.value).splitlines()
    assert 'Referenced column "formla" not found' in first
    assert hints and hints[0].startswith('Candidate bindings: "formula"')
    with pytest.raises(QueryError, match=r'does not exist!\nDid you mean "predictions"( or|\?)'):
        sqlite_lake.sql("select * from predictionz")
    with pytest.raises(QueryError, match=r'\nDid you mean "snapshots"\?'):
        sqlite_lake.sql("select * from snapshot")


def test_an_arrow_table_prints_as_its_dataframe_does():
    import pyarrow as pa

    # (missing text is left out: pandas versions differ on it, see above; Arrow shows None)
    table = pa.table({"name": ["Si", "GaN\nwurtzite", "YPO4"], "gap": [0.61, 3.2, None], "n": [1, None, 3],
                      "z": [[1.5, 2.0], [], None], "ok": [True, False, None]})
    for width, max_rows in ((30, 2), (60, 50), (200, 1)):
        arrow_lines = format_frame(table, width=width, max_rows=max_rows)
        assert arrow_lines == format_frame(table.to_pandas(), width=width, max_rows=max_rows)
    assert format_frame(table, width=200)[3].split() == ["YPO4", "NaN", "3", "None", "None"]
    assert format_frame(table.slice(0, 0), width=80) == ["(no rows)"]
