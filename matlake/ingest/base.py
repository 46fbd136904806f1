"""The ingest contract: a parser is a pure function from bytes to Arrow tables.

A parser module never touches Parquet files, the object store or the catalog.
It gets the (decompressed) bytes of one source file and a :class:`ParseContext`
and returns a :class:`ParseResult`: rows for one or more science tables (with
``record_id`` computed through :meth:`ParseContext.record_id`) and any large
arrays it wants kept as objects.  The platform hashes, dedups, stores the raw
bytes, commits, and records provenance and the ingest ledger.

Bad input raises :class:`ParseError` naming the field, what was expected and
what was found; the platform adds the file name and parser version and records
a ``failed`` ledger row.  A parser raises ParseError *only* for bad input:
where it relies on a library to reject malformed input (pymatgen raising
ValueError or KeyError, say), it translates that exception into a ParseError
at that call.  Any other exception is a bug in the parser: the platform
records it as an ``error`` with its traceback, counts it apart from bad input
and ``matlake retry`` tries it again.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

RECORD_ID_ALGO = "sha256-32:v1"  # stored with ids so a future formula change is detectable


class ParseError(Exception):
    """Input that a parser cannot turn into records.

    ``field`` is the thing that was wrong (a tag, column, header line, byte
    offset...), ``expected`` what the format requires, ``found`` what the file
    had.  The platform prefixes the file name when it records the failure.
    """

    def __init__(self, field: str, expected: str, found: str, *, file: str | None = None) -> None:
        self.field = field
        self.expected = expected
        self.found = printable(found)
        self.file = file
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"{self.file}: " if self.file else ""
        return f"{where}field {self.field}: expected {self.expected}, found {self.found}"

    def with_file(self, file: str) -> "ParseError":
        return ParseError(self.field, self.expected, self.found, file=file)


# What a parsing library (pymatgen, the json and XML readers, numpy) raises when the input is
# malformed.  Parsers catch these *only around the library call that reads the input* and turn
# them into a ParseError there; outside such a call they are bugs.  Deliberately absent: ImportError,
# NameError, NotImplementedError, RecursionError, MemoryError, OSError (environment or code faults).
LIBRARY_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, KeyError, IndexError, TypeError, AttributeError, ArithmeticError, AssertionError, EOFError,
    SyntaxError,  # xml.etree's and lxml's XML parse errors
)


def json_default(obj: Any) -> Any:
    """``json.dumps`` fallback for parsed metadata: numpy values as lists, pymatgen objects as
    their dicts, dates in ISO 8601, anything else as its text."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "as_dict"):
        return obj.as_dict()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return str(obj)


def load_json(data: bytes) -> Any:
    """``data`` decoded as one JSON document; anything else is a :class:`ParseError` of field JSON."""
    import json

    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParseError("JSON", "a JSON document", f"{type(exc).__name__}: {exc}") from exc


def describe_start(data: bytes, n: int = 40) -> str:
    """How ``data`` begins, for a message: a quoted excerpt of text, or 'binary data', never raw bytes."""
    head = data[:n]
    if not head:
        return "nothing (empty)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not merely a character cut at the end of the excerpt
            return f"binary data ({len(data)} bytes)"
        text = head[:exc.start].decode("utf-8")
    if "\x00" in text or sum(not (c.isprintable() or c in "\r\n\t") for c in text) > len(text) // 10:
        return f"binary data ({len(data)} bytes)"
    return f"text starting {printable(text)!r}"


FOUND_LIMIT = 300  # characters of "found" shown in a message


def printable(text: str, limit: int = FOUND_LIMIT) -> str:
    """``text`` safe to print: control characters escaped, at most ``limit`` characters."""
    text = str(text)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


@dataclass
class ParseContext:
    """What a parser knows about the source besides its bytes."""

    source_sha256: str
    filename: str
    parser: str
    options: Mapping[str, Any] = field(default_factory=dict)
    objects: dict[str, bytes] = field(default_factory=dict)
    # A file on disk whose bytes are exactly the parser's input, when the platform
    # has one (an uncompressed source): parsers of path-only libraries read it
    # instead of writing a temporary copy.  Read-only; never required.
    content_path: str | None = None
    # Set by the platform: keeps an array as an object without an encoded copy in memory
    # and returns (sha256, size in bytes).  Without one, arrays are encoded into ``objects``.
    array_sink: Callable[[np.ndarray], tuple[str, int]] | None = None
    sunk: dict[str, int] = field(default_factory=dict)  # objects the sink kept: sha256 -> size in bytes
    # Set by the platform: writes a chunked array (matlake.arrays) straight into the store and
    # returns (sha256, size in bytes, index sha256).
    chunked_sink: Callable[[Any, tuple[int, ...] | None, str], tuple[str, int, str]] | None = None

    def record_id(self, locator: str) -> str:
        """Stable id of the record found at ``locator`` inside this source.

        It depends on the raw bytes, the parser *name* and the locator, not on
        the parser version, so a re-parse with a newer parser adds a version
        of the same record.
        """
        return record_id(self.source_sha256, self.parser, locator)

    def put_object(self, data: bytes) -> str:
        """Keep ``data`` as a content-addressed object; returns its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        self.objects[sha] = data
        return sha

    def put_array(self, array: np.ndarray) -> str:
        """Keep a numpy array exactly (dtype, shape, bytes) as an object; returns its sha256.

        The array is kept as it is now: the platform may write it after this returns,
        so the parser must not change it afterwards.
        """
        if self.array_sink is not None:
            sha, size = self.array_sink(array)
            self.sunk[sha] = size
            return sha
        return self.put_object(encode_array(array))


    def put_chunked(self, array: Any, chunks: tuple[int, ...] | None = None, codec: str = "raw") -> tuple[str, str]:
        """Keep an image, stack or series as a chunked array object (:mod:`matlake.arrays`),
        read lazily tile by tile later; returns (object sha256, index sha256).

        ``array`` may be a memory map: chunks are copied one at a time.
        """
        if self.chunked_sink is not None:
            sha, size, index_sha = self.chunked_sink(array, chunks, codec)
            self.sunk[sha] = size
            return sha, index_sha
        from matlake.arrays import encode_chunked

        data, info = encode_chunked(array, chunks, codec)
        return self.put_object(data), info.index_sha256


def record_id(source_sha256: str, parser: str, locator: str) -> str:
    return hashlib.sha256(f"{source_sha256}\x00{parser}\x00{locator}".encode()).hexdigest()[:32]


def encode_array(array: np.ndarray) -> bytes:
    """Exact array format: NumPy's ``.npy`` (dtype, shape, memory order and bytes kept).

    Stored uncompressed: deflate saved under 10% on real charge densities
    while costing several times pymatgen's own parse time.  Objects written
    before this format was chosen are ``.npz`` files with key ``data``;
    :func:`decode_array` reads both.
    """
    header, body = array_parts(array)
    return header + body.tobytes()


def array_parts(array: np.ndarray) -> tuple[bytes, memoryview]:
    """The :func:`encode_array` bytes of ``array`` as (``.npy`` header, a view of its data).

    A C- or Fortran-ordered array is not copied (pymatgen's grids are Fortran
    ordered): the platform hashes and writes the two parts as they are.
    """
    if array.dtype.hasobject:
        raise ValueError(f"array of dtype {array.dtype}: only plain (non-object) dtypes are kept")
    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        array = np.ascontiguousarray(array)
    fields = np.lib.format.header_data_from_array_1_0(array)
    header = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(header, fields)
    except ValueError:  # a header over 64 KiB (a very long shape or record dtype), as np.save does
        header = io.BytesIO()
        np.lib.format.write_array_header_2_0(header, fields)
    # a Fortran-ordered array's transpose is C-ordered: its bytes are the .npy data as they lie
    body = array if array.flags.c_contiguous else array.T
    return header.getvalue(), memoryview(body.reshape(-1).view(np.uint8))


def decode_array(data: bytes) -> np.ndarray:
    """The array of an :func:`encode_array` object (``.npy``; or ``.npz`` with key ``data``, written
    by earlier versions)."""
    if data[:6] == b"\x93NUMPY":
        return np.load(io.BytesIO(data), allow_pickle=False)
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return npz["data"]


@dataclass
class ParseResult:
    """Rows per table (Arrow tables or lists of dicts) plus objects to keep."""

    tables: dict[str, pa.Table | list[dict[str, Any]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def add_rows(self, table: str, rows: list[dict[str, Any]] | pa.Table) -> None:
        if isinstance(rows, pa.Table):
            existing = self.tables.get(table)
            if existing is None:
                self.tables[table] = rows
            else:
                if not isinstance(existing, pa.Table):
                    existing = pa.Table.from_pylist(existing)
                self.tables[table] = pa.concat_tables([existing, rows], promote_options="default")
        else:
            existing = self.tables.setdefault(table, [])
            if isinstance(existing, pa.Table):
                self.tables[table] = pa.concat_tables(
                    [existing, pa.Table.from_pylist(rows)], promote_options="default"
                )
            else:
                existing.extend(rows)


@dataclass(frozen=True)
class Parser:
    """A declared parser: name + version, the kind it belongs to, and two pure functions.

    ``detect(head, filename)`` looks at the first 8 KiB of the decompressed
    content (and the name) and says whether this parser reads it.
    ``parse(data, ctx)`` turns the whole decompressed content into rows.

    ``buffer_ok`` declares that ``parse`` only slices ``data``, takes its
    ``len`` and writes it out (or reads ``ctx.content_path`` instead): for a
    large uncompressed source the platform may then pass a read-only memory
    map of the stored bytes rather than a copy in memory.

    ``file_options`` names options whose value is the path of a TOML file (a
    table's map): the platform reads and parses it before any work and passes the
    parsed content instead, keeping the file's bytes as an object the ingest
    activity *used* (:func:`matlake.platform.ingestion.resolve_file_options`); the
    parser stays pure.  ``keyed_by_options`` declares that the options change what
    the parser makes of the same bytes (a map does): a success is then keyed by the
    options too, so the same file with another map is parsed again.
    """

    name: str
    version: str
    kind: str
    detect: Callable[[bytes, str], bool]
    parse: Callable[[bytes, ParseContext], ParseResult]
    description: str = ""
    buffer_ok: bool = False
    file_options: tuple[str, ...] = ()
    keyed_by_options: bool = False
