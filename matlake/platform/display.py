"""Tables as text for a terminal: rows that fit the screen.

:func:`format_frame` lays a DataFrame (or a pyarrow Table: ``matlake sql`` prints
query results without importing pandas) out in aligned columns no wider than the
terminal (``$COLUMNS``, else the terminal's width, else
:data:`DEFAULT_WIDTH` when standard output is a pipe or file).  Long cells are
cut with "…", columns that do not fit are dropped and named in a note, and
line breaks inside cells are shown as ``\\n`` so that one row is one line.
``wide=True`` turns the fitting off.  Nothing here changes data: full values
go through ``--csv`` / ``--parquet``.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Sequence
from typing import Any

DEFAULT_WIDTH = 120  # columns, when standard output is not a terminal
CELL_WIDTH = 40  # a cell gets at most this many characters until spare width is shared out
MIN_CELL_WIDTH = 6  # the narrowest a cut column gets ("ab…" is no help)
GAP = "  "
ELLIPSIS = "…"
_SEQ_ITEMS = 64  # items of a list cell rendered before the rest is elided (its text is cut anyway)


def terminal_width(stream: Any = None) -> int:
    """Characters per line for ``stream`` (default ``sys.stdout``): ``$COLUMNS`` when set,
    the terminal's width when the stream is a terminal, else :data:`DEFAULT_WIDTH`."""
    cols = os.environ.get("COLUMNS", "")
    if cols.isdigit() and int(cols) > 0:
        return int(cols)
    stream = sys.stdout if stream is None else stream
    try:
        if stream.isatty():
            return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns
    except (AttributeError, ValueError, OSError):
        pass
    return DEFAULT_WIDTH


def cell_text(value: Any, full: bool = False) -> str:
    """One value as one line of text (no line breaks); lists are shown as ``[a, b, …]``."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, str):
        return _one_line(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _one_line(repr(bytes(value)))
    if isinstance(value, dict):
        return _one_line("{" + ", ".join(f"{k}: {cell_text(v, full)}" for k, v in value.items()) + "}")
    if hasattr(value, "tolist") and not hasattr(value, "isoformat"):  # numpy scalars and arrays
        value = value.tolist()
        if not isinstance(value, (list, tuple)):
            return cell_text(value, full)
    if isinstance(value, (list, tuple)):
        items = value if full or len(value) <= _SEQ_ITEMS else value[:_SEQ_ITEMS]
        more = "" if len(items) == len(value) else f", {ELLIPSIS}"
        return "[" + ", ".join(cell_text(v, full) for v in items) + more + "]"
    try:
        if value != value:  # NaT, pd.NA
            return str(value)
    except (TypeError, ValueError):
        pass
    return _one_line(str(value))


def _float_text(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0 or 1e-4 <= abs(v) < 1e15:
        text = f"{v:.6f}".rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    return f"{v:.6g}"


def _one_line(s: str) -> str:
    return s.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r").replace("\t", " ")


def _cut(s: str, width: int) -> str:
    return s if len(s) <= width else s[: max(width - 1, 0)] + ELLIPSIS


def format_frame(df: Any, max_rows: int = 50, width: int | None = None, wide: bool = False) -> list[str]:
    """``df`` (a pandas DataFrame or a pyarrow Table) as lines of text: a header, up to
    ``max_rows`` rows, and notes on rows and columns not shown.

    Lines are at most ``width`` characters (default :func:`terminal_width`) unless
    ``wide``: long cells end in "…", and columns that do not fit are left out and
    listed ("3 more columns: a, b, c").  Numbers are right-aligned.
    """
    names, numeric, values, n_rows = _arrow_columns(df, max_rows) if _is_arrow(df) else _pandas_columns(df, max_rows)
    if n_rows == 0:
        return ["(no rows)" if names else "(no result)"]
    width = None if wide else max(width if width is not None else terminal_width(), 10)
    n_shown = len(values[0]) if values else 0
    cells = [[cell_text(v, full=wide) for v in column] for column in values]
    natural = [max([len(names[i])] + [len(c) for c in cells[i]]) for i in range(len(names))]

    if width is None:
        widths, keep = natural, list(range(len(names)))
    else:
        widths, keep = _fit(natural, names, width)
    lines = []
    header = GAP.join(_align(_cut(names[i], widths[i]), widths[i], numeric[i]) for i in keep)
    lines.append(header.rstrip())
    for r in range(n_shown):
        row = GAP.join(_align(_cut(cells[i][r], widths[i]), widths[i], numeric[i]) for i in keep)
        lines.append(row.rstrip())
    if n_rows > n_shown:
        lines.append(f"({n_rows} rows, {n_shown} shown; --max-rows N for more)")
    dropped = [names[i] for i in range(len(names)) if i not in keep]
    if dropped:
        note = f"{len(dropped)} more column{'s' if len(dropped) > 1 else ''}: " + ", ".join(dropped)
        lines.append(note if width is None else _cut(note, width))
    return lines


def _is_arrow(frame: Any) -> bool:
    return type(frame).__module__.startswith("pyarrow")


def _pandas_columns(df: Any, max_rows: int) -> tuple[list[str], list[bool], list[list[Any]], int]:
    """(names, numeric?, the values of the rows shown, column by column, number of rows)."""
    names = [str(c) for c in df.columns]
    if df.empty:
        return names, [], [], 0
    import pandas as pd

    shown = df.head(max_rows) if max_rows >= 0 else df
    numeric = [pd.api.types.is_numeric_dtype(df.dtypes.iloc[i]) and not pd.api.types.is_bool_dtype(df.dtypes.iloc[i])
               for i in range(len(names))]
    return names, numeric, [shown.iloc[:, i].tolist() for i in range(len(names))], len(df)


def _arrow_columns(table: Any, max_rows: int) -> tuple[list[str], list[bool], list[list[Any]], int]:
    """As :func:`_pandas_columns`, for a pyarrow Table; a missing number shows as NaN, as pandas shows it."""
    import pyarrow as pa

    names = [str(c) for c in table.column_names]
    shown = table.slice(0, max_rows) if max_rows >= 0 else table
    numeric = [pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
               for f in table.schema]
    values = [[math.nan if v is None and numeric[i] else v for v in shown.column(i).to_pylist()]
              for i in range(len(names))]
    return names, numeric, values, table.num_rows


def _align(s: str, width: int, right: bool) -> str:
    return s.rjust(width) if right else s.ljust(width)


def _fit(natural: Sequence[int], names: Sequence[str], width: int) -> tuple[list[int], list[int]]:
    """Column widths and the columns kept, left to right, so that a row fits ``width``."""
    capped = [min(n, CELL_WIDTH) for n in natural]
    keep: list[int] = []
    used = 0
    for i, w in enumerate(capped):
        need = w + (len(GAP) if keep else 0)
        if used + need <= width:
            keep.append(i)
            used += need
            continue
        room = width - used - (len(GAP) if keep else 0)
        if room >= min(w, MIN_CELL_WIDTH) and room > 0:
            # The last column that fits at all gets what is left, cut.
            capped[i] = room
            keep.append(i)
            used = width
        break
    if not keep:  # one column wider than the screen: show it, cut
        capped[0] = width
        keep = [0]
        used = width
    # Share out what is left among cut columns, left to right.
    spare = width - used
    for i in keep:
        if spare <= 0:
            break
        extra = min(natural[i] - capped[i], spare)
        if extra > 0:
            capped[i] += extra
            spare -= extra
    return [capped[i] if i in keep else 0 for i in range(len(natural))], keep
