"""Spectra file ingest: ``lake.ingest`` of N XDI files vs xraylarch's ``read_xdi`` on the same files.

The files are copies of ``samples/spectra/ni_metal_rt.xdi`` with one header field
added (``Sample.copy``) (new bytes, new sha256, same size and content), so every ingest parses
every file.  What is compared, per round, for N files (default 200 and 1000):

* **larch**: ``larch.io.read_xdi(path)`` on each file — what an XAS user calls to read
  a file into arrays (nothing is stored);
* **lake.ingest**: ``lake.ingest(folder, workers=1)`` into a fresh lake — read, sha256,
  detect, parse, raw bytes into the object store, Parquet, the catalog commit and one
  ingest activity and ledger row per file.

Variants take turns round by round; medians and the ratio lake / larch are
reported with files per second.  Run:
``.venv/bin/python bench/bench_spectra_ingest.py [--sizes 200,1000] [--repeat 3] [--json]``
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timing, emit_json, format_machine, machine_info, table, time_call  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "samples" / "spectra" / "ni_metal_rt.xdi"


def make_files(folder: Path, n: int) -> list[Path]:
    """``n`` distinct copies of the Ni XDI file (a numbered ``Sample.copy`` header field)."""
    first, _, rest = SOURCE.read_text().partition("\n")  # the "# XDI/1.0" version line stays first
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"ni_{i:06d}.xdi"
        p.write_text(f"{first}\n# Sample.copy: {i:06d}\n{rest}")
        paths.append(p)
    return paths


def run_size(n: int, repeat: int, workdir: Path) -> dict[str, Timing]:
    from larch.io import read_xdi

    from matlake.platform.lake import Lake

    base = Path(tempfile.mkdtemp(prefix=f"bench-spectra-ingest-{n}-", dir=workdir))
    try:
        files = make_files(base / "files", n)
        timings = {"larch read_xdi": Timing("larch read_xdi"), "lake.ingest": Timing("lake.ingest")}
        for r in range(repeat):
            t, _ = time_call(lambda: [read_xdi(str(p)) for p in files], 1, "larch read_xdi")
            timings["larch read_xdi"].samples.extend(t.samples)
            root = base / f"lake{r}"
            lake = Lake.init(root)

            def ingest() -> Any:
                return lake.ingest([base / "files"], workers=1, progress=False)

            t, summary = time_call(ingest, 1, "lake.ingest")
            timings["lake.ingest"].samples.extend(t.samples)
            got = lake.sql("select count(*) from spectra").fetchone()[0]
            if got != n:
                raise SystemExit(f"expected {n} spectra in the lake, found {got}")
            shutil.rmtree(root)
        return timings
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="200,1000", help="comma-separated numbers of files (default 200,1000)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    info = machine_info()
    import larch.io  # noqa: F401  (imports out of the timed rounds)

    import matlake.ingest.spectra  # noqa: F401
    import matlake.platform.lake  # noqa: F401

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    results = {n: run_size(n, args.repeat, args.workdir) for n in sizes}
    payload = {"benchmark": "spectra-ingest", "machine": info, "repeat": args.repeat,
               "sizes": {str(n): {k: t.as_dict() for k, t in r.items()} for n, r in results.items()}}
    if args.json:
        emit_json(payload)
        return payload
    print(format_machine(info))
    rows = []
    for n, r in results.items():
        lake_t, ref_t = r["lake.ingest"], r["larch read_xdi"]
        rows.append([n, args.repeat, ref_t.median, f"{n / ref_t.median:,.0f}", lake_t.median,
                     f"{n / lake_t.median:,.0f}", f"{lake_t.median / ref_t.median:.2f}x"])
    print(table(["XDI files", "rounds", "larch median (s)", "larch files/s", "lake median (s)", "lake files/s",
                 "ratio lake/larch"], rows))
    return payload


if __name__ == "__main__":
    main()
