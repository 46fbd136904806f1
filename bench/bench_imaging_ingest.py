"""Micrograph ingest: ``lake.ingest`` of N 2048 x 2048 uint16 TIFF files vs ``tifffile.imread`` alone.

The frames are N separate single-page TIFF files (not one multi-page TIFF), each
2048 x 2048 uint16 (8 MiB of pixels) with an ImageJ calibration (0.1 nm/px), written
once into a temporary folder from a seeded generator (Poisson counts around a smooth
field, so that they neither compress to nothing nor repeat: every file has its own
sha256).  What is compared, per round:

* **tifffile**: ``tifffile.imread(path)`` on each file — the floor: decode the pixels,
  store nothing;
* **lake.ingest**: ``lake.ingest(folder, workers=1)`` into a fresh lake — read, sha256,
  detect, parse the TIFF and its calibration, the raw bytes and the chunked pixel
  object into the object store, one ``micrographs`` row per file in Parquet, the
  catalog commit, one activity and ledger row per file.

Variants take turns round by round; medians, frames per second and the ratio lake /
tifffile are reported.  After the last round, one 256 x 256 tile of one ingested frame
is read through ``lake.image(id)`` and the bytes read are compared with the stored
object's size (the tile is read without reading the rest of the image).

Disk: N x 8 MiB of files plus about 2 x N x 8 MiB per lake (raw bytes + chunked
pixels; one lake at a time), so 1,000 frames need ~25 GB free.  Run:
``.venv/bin/python bench/bench_imaging_ingest.py [--frames 1000] [--repeat 3] [--workdir DIR] [--json]``
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timing, emit_json, format_machine, machine_info, table, time_call  # noqa: E402

SIZE = 2048
PIXEL_NM = 0.1


def make_files(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` distinct uint16 frames as ImageJ-calibrated TIFF files (seeded)."""
    import tifffile

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    base = 400 + 300 * np.sin(6 * xx) * np.cos(4 * yy)  # a smooth field; Poisson noise on top
    paths = []
    for i in range(n):
        frame = rng.poisson(base * (1 + 0.001 * i)).astype(np.uint16)
        p = folder / f"frame_{i:05d}.tif"
        tifffile.imwrite(p, frame, imagej=True, resolution=(1 / PIXEL_NM, 1 / PIXEL_NM),
                         metadata={"unit": "nm"})
        paths.append(p)
    return paths


def tile_read(lake: Any, tile: int = 256) -> dict[str, Any]:
    """Bytes read for one ``tile`` x ``tile`` tile of the first frame vs its pixel object's size:
    at the origin (inside one chunk) and at the centre (straddling four chunks)."""
    rid, sha, chunks = lake.sql("select record_id, array_sha256, chunk_shape from micrographs "
                                "order by source_name limit 1").fetchone()
    size = lake.sql("select size from objects where sha256 = ?", params=[sha]).fetchone()[0]
    out: dict[str, Any] = {"tile": tile, "object_size": int(size), "chunk_shape": list(chunks)}
    for where, y0 in (("origin", 0), ("centre", SIZE // 2 - tile // 2)):
        img = lake.image(rid)  # a fresh reader: counts only this tile
        block = np.asarray(img[y0:y0 + tile, y0:y0 + tile])
        if block.shape != (tile, tile):
            raise SystemExit(f"expected a {tile}x{tile} tile, found {block.shape}")
        out[f"bytes_read_{where}"] = int(img.array.bytes_read)
    return out


def run(n: int, repeat: int, workdir: Path) -> tuple[dict[str, Timing], dict[str, Any]]:
    import tifffile

    from matlake.platform.lake import Lake

    base = Path(tempfile.mkdtemp(prefix=f"bench-imaging-ingest-{n}-", dir=workdir))
    try:
        files = make_files(base / "files", n)
        timings = {"tifffile.imread": Timing("tifffile.imread"), "lake.ingest": Timing("lake.ingest")}
        tile = {}
        for r in range(repeat):
            t, _ = time_call(lambda: [tifffile.imread(p) for p in files], 1, "tifffile.imread")
            timings["tifffile.imread"].samples.extend(t.samples)
            root = base / f"lake{r}"
            lake = Lake.init(root)
            t, summary = time_call(lambda: lake.ingest([base / "files"], workers=1, progress=False), 1,
                                   "lake.ingest")
            timings["lake.ingest"].samples.extend(t.samples)
            got = lake.sql("select count(*), min(pixel_size_nm_x), max(pixel_size_nm_x) from micrographs").fetchone()
            if got[0] != n or abs(got[1] - PIXEL_NM) > 1e-9 or abs(got[2] - PIXEL_NM) > 1e-9:
                raise SystemExit(f"expected {n} micrographs at {PIXEL_NM} nm/px, found {got}")
            if r == repeat - 1:
                tile = tile_read(lake)
            shutil.rmtree(root)
        return timings, tile
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=1000, help="number of 2048^2 uint16 TIFF files (default 1000)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    info = machine_info()
    free = shutil.disk_usage(args.workdir).free
    need = 3 * args.frames * SIZE * SIZE * 2 * 1.1
    if free < need:
        raise SystemExit(f"{args.workdir}: expected {need / 1e9:.1f} GB free for {args.frames} frames, found "
                         f"{free / 1e9:.1f} GB (use --frames 200)")
    import tifffile  # noqa: F401  (imports out of the timed rounds)

    import matlake.ingest.imaging  # noqa: F401
    import matlake.platform.lake  # noqa: F401

    timings, tile = run(args.frames, args.repeat, args.workdir)
    payload = {"benchmark": "imaging-ingest", "machine": info, "repeat": args.repeat, "frames": args.frames,
               "frame": f"{SIZE}x{SIZE} uint16, one TIFF file each", "timings": {k: t.as_dict() for k, t in
                                                                              timings.items()}, "tile": tile}
    if args.json:
        emit_json(payload)
        return payload
    print(format_machine(info))
    lake_t, ref_t = timings["lake.ingest"], timings["tifffile.imread"]
    n = args.frames
    print(table(["2048^2 uint16 TIFF files", "rounds", "tifffile median (s)", "tifffile frames/s",
                 "lake median (s)", "lake frames/s", "ratio lake/tifffile"],
                [[n, args.repeat, ref_t.median, f"{n / ref_t.median:,.1f}", lake_t.median,
                  f"{n / lake_t.median:,.1f}", f"{lake_t.median / ref_t.median:.2f}x"]]))
    for where in ("origin", "centre"):
        b = tile[f"bytes_read_{where}"]
        print(f"a {tile['tile']}x{tile['tile']} tile at the {where} (chunks {tile['chunk_shape']}): {b:,} bytes read "
              f"of a {tile['object_size']:,}-byte pixel object ({100 * b / tile['object_size']:.2f} %)")
    return payload


if __name__ == "__main__":
    main()
