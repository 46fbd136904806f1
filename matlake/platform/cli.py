"""The ``matlake`` command line.

Every command takes ``--lake PATH_OR_URL`` (default ``$MATLAKE_LAKE``, else the
current directory), has ``--help``, and fails with a one-line message and a
non-zero exit code (set ``MATLAKE_DEBUG=1`` for the traceback); a query error
keeps DuckDB's hint lines below it.  Output cut short by its reader
(``matlake sql ... | head``) ends quietly with status 0.  Other
packages add commands through :data:`EXTENSIONS`: modules with a
``register(subparsers, common)`` function.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXTENSIONS = ("matlake.platform.operations", "matlake.platform.jobs", "matlake.models.eis.cli",
              "matlake.models.insertion.cli", "matlake.models.spectra.cli",
              "matlake.models.feff.cli", "matlake.models.imaging.cli", "matlake.models.scattering.cli",
              "matlake.demo", "matlake.models.materials.cli", "matlake.models.materials.campaign_cli")


class CliError(Exception):
    """A user error reported as one line."""


def _lake(args: argparse.Namespace):
    from matlake.platform.lake import Lake

    return Lake.open(args.lake)


def _kv(items: Sequence[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for it in items or []:
        key, sep, val = it.partition("=")
        if not sep or not key:
            raise CliError(f"option {it!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(val)
        except json.JSONDecodeError:
            out[key] = val
    return out


def print_frame(df, max_rows: int = 50, width: int | None = None, wide: bool = False) -> None:
    """Print a DataFrame or a pyarrow Table fitted to the terminal (see :mod:`matlake.platform.display`)."""
    from matlake.platform.display import format_frame

    for line in format_frame(df, max_rows=max_rows, width=width, wide=wide):
        print(line)


# --------------------------------------------------------------------------- commands


def cmd_init(args: argparse.Namespace) -> int:
    from matlake.platform.lake import Lake

    lake = Lake.init(args.dir, catalog=args.catalog)
    print(f"created lake at {lake.root} (catalog {lake.config.catalog_url.split('@')[-1]})")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from matlake.platform import catalog, migrate
    from matlake.platform.config import default_location, is_url, read_config

    where = default_location(args.lake)
    url = where if is_url(where) else read_config(Path(where)).catalog_url
    engine = catalog.make_engine(url)
    try:
        if args.action == "upgrade":
            migrate.upgrade(engine, args.revision or "head")
        elif args.action == "downgrade":
            if not args.revision:
                raise CliError("db downgrade: expected a revision (e.g. -1 or base)")
            migrate.downgrade(engine, args.revision)
        elif args.action == "history":
            cur = migrate.current(engine)
            for rev, doc in migrate.history():
                print(f"{'*' if rev == cur else ' '} {rev}  {doc}")
            return 0
        print(f"catalog revision: {migrate.current(engine) or 'base (empty)'} (head {migrate.head()})")
    finally:
        engine.dispose()
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    lake = _lake(args)
    options = _kv(args.option)
    if getattr(args, "for_image", None):
        options["for"] = args.for_image
    paths = list(args.paths)
    if paths[:1] == ["mp"]:
        return _ingest_mp(lake, args, options)
    report = lake.ingest(paths, kind=args.kind, options=options, workers=args.workers, batch_size=args.batch_size,
                         progress=None if args.progress else False, dask=args.dask)
    for o in report.outcomes:
        if o.status in ("failed", "error"):
            print(f"{o.status.upper()} {o.message}", file=sys.stderr)
        elif args.strict and o.still_failed:
            flag = "--failed" if o.prior == "failed" else "--errors"
            print(f"STILL {o.prior.upper()} {o.path} (unchanged since then; see matlake ledger {flag})",
                  file=sys.stderr)
    print(report.summary())
    return 1 if report.still_failed and args.strict else 0


def _ingest_mp(lake, args: argparse.Namespace, options: dict[str, Any]) -> int:
    import tempfile

    from matlake.ingest import mp

    if not args.query:
        raise CliError("ingest mp: expected --query '{\"chemsys\": \"Ga-N\"}' (JSON criteria)")
    try:
        criteria = json.loads(args.query)
    except json.JSONDecodeError as exc:
        raise CliError(f"--query: expected JSON criteria, found {args.query!r} ({exc.msg})") from exc
    blob = mp.fetch(criteria, api_key=args.api_key or os.environ.get("MP_API_KEY"), endpoint=args.endpoint)
    with tempfile.TemporaryDirectory() as tmp:
        # The API response is the raw object: it is kept byte for byte like any file.
        path = Path(tmp) / f"mp-query-{abs(hash(args.query)) % 10**8}.json"
        path.write_bytes(blob)
        report = lake.ingest([path], kind="mp-json", options=options, progress=False)
    print(report.summary())
    return 0


def _lake_for_query(args: argparse.Namespace):
    """The lake for a read-only command: on a SQLite catalog at the code's revision, read through
    the standard library's sqlite3 (no SQLAlchemy, pandas or Alembic to import); else the full lake."""
    from matlake.platform.reader import open_for_query

    return open_for_query(args.lake)


def cmd_sql(args: argparse.Namespace) -> int:
    # --write statements change only the in-memory DuckDB, but keep the full lake as before.
    lake = _lake(args) if args.write else _lake_for_query(args)
    # read_only: the statement is parsed by the engine's own DuckDB connection (a second
    # in-memory database just to parse it costs as much as the rest of a short query).
    result = lake.query_engine(args.as_of).sql(args.query, read_only=not args.write)
    if args.csv or args.parquet:
        table = _fetch(result.arrow)
        if args.csv:
            import pyarrow.csv as pacsv

            pacsv.write_csv(_flat_for_csv(table), args.csv)
            print(f"wrote {table.num_rows} rows to {args.csv}")
        if args.parquet:
            import pyarrow.parquet as pq

            pq.write_table(table, args.parquet)
            print(f"wrote {table.num_rows} rows to {args.parquet}")
        return 0
    # An Arrow table, not a DataFrame: printing a query's result needs no pandas.
    print_frame(_fetch(result.arrow), args.max_rows, width=args.max_width, wide=args.wide)
    return 0


def _fetch(fn):
    """Run a query's fetch; DuckDB errors raised while executing keep their hints."""
    import duckdb

    from matlake.platform.query import QueryError, error_message

    try:
        return fn()
    except duckdb.Error as exc:
        raise QueryError(error_message(exc)) from exc


def _flat_for_csv(table):
    """CSV has no nested types: list/struct columns become JSON text."""
    import pyarrow as pa

    cols = []
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_nested(col.type):
            col = pa.array([None if v is None else json.dumps(v, default=str) for v in col.to_pylist()], pa.string())
        cols.append(col)
    return pa.table(cols, names=table.column_names)


def cmd_tag(args: argparse.Namespace) -> int:
    lake = _lake(args)
    sid = lake.tag(args.name, as_of=args.as_of, note=args.note, move=args.move)
    print(f"tag {args.name} -> snapshot {sid}")
    return 0


def cmd_tags(args: argparse.Namespace) -> int:
    import pandas as pd

    print_frame(pd.DataFrame(_lake(args).tags()))
    return 0


def cmd_snapshots(args: argparse.Namespace) -> int:
    lake = _lake_for_query(args)
    print_frame(lake.sql(f"select * from snapshots order by snapshot_id desc limit {int(args.limit)}").df(), args.limit)
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    import pandas as pd

    from matlake import schemas

    lake = _lake_for_query(args)
    qe = lake.query_engine(args.as_of)
    rows = []
    for name, t in schemas.TABLES.items():
        n = qe.sql(f"select count(*) from {name}").fetchone()[0]
        n_all = qe.sql(f"select count(*) from {name}_all").fetchone()[0]
        rows.append({"table": name, "domain": t.domain, "schema_version": t.version, "records": n, "rows (all versions)": n_all})
    print(f"snapshot {qe.snapshot}")
    print_frame(pd.DataFrame(rows))
    print("views: " + ", ".join(sorted(set(qe.names()) - set(schemas.TABLES))))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from matlake import schemas

    names = [args.table] if args.table else list(schemas.TABLES)
    for n in names:
        print(schemas.get(n).docs())
        print()
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from matlake.platform.provenance import lineage, render_tree, write_dot

    lake = _lake(args)
    direction = "both" if args.both else ("down" if args.down else "up")
    g = lineage(lake, args.id, direction=direction, depth=args.depth, max_fanout=args.max_fanout)
    if direction in ("up", "both"):
        print(render_tree(g, "up"))
    if direction in ("down", "both"):
        if direction == "both":
            print()
        print(render_tree(g, "down"))
    if args.dot:
        png = write_dot(g, args.dot)
        print(f"wrote {args.dot}" + (f" and {png}" if png else " (install graphviz for a PNG)"))
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    out = _lake(args).gc(grace_seconds=args.grace, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for p in out["removed"]:
        print(f"{verb} {p}")
    print(f"{verb} {len(out['removed'])} unregistered files ({out['bytes']} bytes)")
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    lake = _lake_for_query(args)
    wanted = [s for s, on in (("failed", args.failed), ("error", args.errors)) if on]
    cond = f"where status in ({', '.join(repr(s) for s in wanted)})" if wanted else ""
    df = lake.sql(f"select id, status, parser, parser_version, n_records, source_path, message, detail from ledger "
                  f"{cond} order by id desc limit {int(args.limit)}").df()
    if wanted and not df.empty:
        for _, r in df.iterrows():
            print(f"#{r['id']} {r['status']} {r['parser']} {r['parser_version']}: {r['message']}")
            if args.traceback and r["detail"]:
                print("    " + str(r["detail"]).rstrip().replace("\n", "\n    "))
        return 0
    print_frame(df.drop(columns=["detail"]), args.limit)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if ":" not in args.module and args.module not in KNOWN_MODELS:
        raise CliError(f"model module {args.module!r}: expected one of {', '.join(sorted(KNOWN_MODELS))} "
                       f"or package.module:Class")
    lake = _lake(args)
    module = args.module if ":" in args.module else KNOWN_MODELS[args.module]
    info = lake.train(module, as_of=args.as_of, params=_kv(args.param))
    print(f"trained {info.name} v{info.version} ({info.model_id}) on snapshot {info.snapshot_id} "
          f"with {info.n_train} rows; metrics: {json.dumps(info.metrics)}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    out = _lake(args).predict(args.model, as_of=args.as_of, where=args.where, allow_pickle=args.allow_pickle)
    print(f"{out['n']} predictions by {out['model_id']} committed in snapshot {out['snapshot']}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    import pandas as pd

    from matlake.platform.modeling import list_models

    rows = [{"model_id": m.model_id, "name": m.name, "version": m.version, "target": m.target,
             "snapshot": m.snapshot_id, "n_train": m.n_train, "metrics": json.dumps(m.metrics)} for m in list_models(_lake(args))]
    print_frame(pd.DataFrame(rows))
    return 0


# Built-in read-only commands: they need no extension module, so main() does not import them.
QUERY_COMMANDS = frozenset({"sql", "snapshots", "tables", "tags", "ledger", "schema"})

KNOWN_MODELS = {
    "composition-regressor": "matlake.models.dft.composition:CompositionRegressor",
    "spectra-rf-classifier": "matlake.models.spectra.models:SpectraForestClassifier",
    "spectra-rf-regressor": "matlake.models.spectra.models:SpectraForestRegressor",
    "spectra-gb-classifier": "matlake.models.spectra.models:SpectraBoostingClassifier",
    "spectra-gb-regressor": "matlake.models.spectra.models:SpectraBoostingRegressor",
    "spectra-mlp-regressor": "matlake.models.spectra.models:SpectraMLPRegressor",
    "spectra-cnn-regressor": "matlake.models.spectra.models:SpectraCNNRegressor",
}


# --------------------------------------------------------------------------- parser


def build_parser(extensions: bool = True) -> argparse.ArgumentParser:
    """The ``matlake`` parser; ``extensions=False`` leaves out the commands of :data:`EXTENSIONS`
    (importing them costs more than a short query: :func:`main` skips them for :data:`QUERY_COMMANDS`)."""
    from matlake import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--lake", default=None, metavar="PATH_OR_URL",
                        help="lake directory or catalog URL (default: $MATLAKE_LAKE, else the current directory)")
    p = argparse.ArgumentParser(prog="matlake", description="Versioned materials-science data lake with provenance.")
    p.add_argument("--version", action="version", version=f"matlake {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("init", parents=[common], help="create a lake")
    s.add_argument("dir")
    s.add_argument("--catalog", help="SQLAlchemy URL of the catalog (e.g. postgresql://host/db); default SQLite in DIR")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("db", parents=[common], help="catalog migrations: upgrade, downgrade, current, history")
    s.add_argument("action", choices=["upgrade", "downgrade", "current", "history"])
    s.add_argument("revision", nargs="?", help="target revision (upgrade: default head; downgrade: e.g. -1, base)")
    s.set_defaults(func=cmd_db)

    s = sub.add_parser("ingest", parents=[common], help="ingest files or folders (recursive); `ingest mp --query JSON`")
    s.add_argument("paths", nargs="+", help="files or folders; or the word mp with --query")
    s.add_argument("--kind", default="auto", help="force a kind: vasp, structure, mp-json, eis, spectrum, image, mask, table "
                                                  "(default: auto, detect)")
    s.add_argument("--for", dest="for_image", default=None, metavar="IMAGE_ID",
                   help="with --kind mask: the micrographs record the mask labels")
    s.add_argument("--workers", type=int, default=1, help="processes that parse, this one included (default 1)")
    s.add_argument("--batch-size", type=int, default=64, help="files per commit (default 64)")
    s.add_argument("--option", action="append", metavar="KEY=VALUE", help="parser option (repeatable)")
    s.add_argument("--dask", metavar="ADDRESS", help="parse on a Dask cluster (scheduler address)")
    s.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    s.add_argument("--strict", action="store_true",
                   help="exit 1 when any file is failed or errored, including files unchanged since a failure")
    s.add_argument("--query", help="mp: JSON search criteria for the Materials Project")
    s.add_argument("--api-key", help="mp: API key (default $MP_API_KEY)")
    s.add_argument("--endpoint", help="mp: API endpoint (default: the public one)")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("sql", parents=[common], help="run DuckDB SQL over the lake (read-only by default)")
    s.add_argument("query")
    s.add_argument("--as-of", help="snapshot id or tag (default: latest)")
    s.add_argument("--csv", metavar="FILE")
    s.add_argument("--parquet", metavar="FILE")
    s.add_argument("--write", action="store_true", help="allow non-SELECT statements (in-memory only)")
    s.add_argument("--max-rows", type=int, default=50, help="rows printed (default 50)")
    s.add_argument("--max-width", type=int, metavar="N",
                   help="characters per line (default: the terminal's width, 120 when output is not a terminal)")
    s.add_argument("--wide", action="store_true", help="print every column and whole cells, however long the lines")
    s.set_defaults(func=cmd_sql)

    s = sub.add_parser("tag", parents=[common], help="name a snapshot")
    s.add_argument("name")
    s.add_argument("--as-of", help="snapshot id or tag (default: latest)")
    s.add_argument("--note", default="")
    s.add_argument("--move", action="store_true", help="re-point an existing tag")
    s.set_defaults(func=cmd_tag)

    s = sub.add_parser("tags", parents=[common], help="list tags")
    s.set_defaults(func=cmd_tags)

    s = sub.add_parser("snapshots", parents=[common], help="list recent snapshots")
    s.add_argument("--limit", type=int, default=20)
    s.set_defaults(func=cmd_snapshots)

    s = sub.add_parser("tables", parents=[common], help="tables with record counts, and views")
    s.add_argument("--as-of")
    s.set_defaults(func=cmd_tables)

    s = sub.add_parser("schema", parents=[common], help="columns, units and descriptions of the tables")
    s.add_argument("table", nargs="?")
    s.set_defaults(func=cmd_schema)

    s = sub.add_parser("lineage", parents=[common], help="provenance of a record, activity, object or model")
    s.add_argument("id")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--down", action="store_true", help="what was derived from it")
    g.add_argument("--both", action="store_true", help="upstream and downstream")
    s.add_argument("--depth", type=int, default=12)
    s.add_argument("--max-fanout", type=int, default=25)
    s.add_argument("--dot", metavar="FILE", help="write Graphviz DOT (and a PNG when graphviz is installed)")
    s.set_defaults(func=cmd_lineage)

    s = sub.add_parser("gc", parents=[common], help="remove files no snapshot registers")
    s.add_argument("--grace", type=float, default=3600.0, help="keep files younger than this many seconds (default 3600)")
    s.add_argument("--dry-run", action="store_true")
    s.set_defaults(func=cmd_gc)

    s = sub.add_parser("ledger", parents=[common], help="the ingest ledger")
    s.add_argument("--failed", action="store_true", help="only failures (bad input, unreadable files), with messages")
    s.add_argument("--errors", action="store_true", help="only errors (parser bugs), with messages")
    s.add_argument("--traceback", action="store_true", help="with --errors: the traceback of each error")
    s.add_argument("--limit", type=int, default=50)
    s.set_defaults(func=cmd_ledger)

    s = sub.add_parser("train", parents=[common], help="train a model module (name or package.module:Class)")
    s.add_argument("module")
    s.add_argument("--as-of", help="snapshot id or tag of the training data (default: latest)")
    s.add_argument("--param", action="append", metavar="KEY=VALUE")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("predict", parents=[common], help="predict with a model version into `predictions`")
    s.add_argument("model", help="model_... id, NAME (latest version) or NAME:VERSION")
    s.add_argument("--as-of")
    s.add_argument("--where", help="extra SQL condition on the predict view")
    s.add_argument("--allow-pickle", action="store_true",
                   help="unpickle a pickle artifact of an older lake (runs code from objects/: trusted lakes only)")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("models", parents=[common], help="list model versions")
    s.set_defaults(func=cmd_models)

    for name in EXTENSIONS if extensions else ():
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        mod.register(sub, common)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The command is the first argument (the top-level parser has no options but -h/--version).
    parser = build_parser(extensions=not argv or argv[0] not in QUERY_COMMANDS)
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _reader_closed()
    except KeyboardInterrupt:
        print("matlake: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every error becomes one line
        if os.environ.get("MATLAKE_DEBUG"):
            raise
        print(f"matlake: error: {_error_text(exc)}", file=sys.stderr)
        return 1


def _error_text(exc: Exception) -> str:
    """One line; a query error keeps DuckDB's hint lines ("Did you mean", candidates) below it."""
    # KeyError's str() is the repr of its key: show the message itself, not it in quotes
    text = (exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str)
            else str(exc)).strip()
    if not text:
        return type(exc).__name__
    query = sys.modules.get("matlake.platform.query")  # not loaded: the error cannot be a QueryError
    return text if query is not None and isinstance(exc, query.QueryError) else text.splitlines()[0]


def _reader_closed() -> int:
    """The reader of our output went away (``matlake sql ... | head``): stop quietly, as
    Unix tools do.  Standard output now points at /dev/null so that Python's own flush
    at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
