"""Spectra at scale: commit, featurize (CDF, PCA) and similarity search over 10^4-10^5 spectra.

For each size N (default 10^4 and 10^5 spectra on the 100-point ``xanes-ni-k``
grid, XANES-like generated intensities):

(a) **commit**: N generated ``spectra`` rows (axis and intensity lists of 100
    points) committed to a new lake in one commit (``Lake.commit``: schema
    conform, Parquet, catalog transaction) vs ``pyarrow.parquet.write_table``
    of the same Arrow rows;
(b) **featurize**: ``featurize_spectra(lake, "cdf", grid)`` over N
    ``spectra_processed`` rows (read at a snapshot, batched CDF, one activity
    that used every subject, commit) vs numpy computing the same CDF on the
    matrix in memory; ``fit_pca`` (10 components, a model version through
    ``modeling.train``) vs scikit-learn's PCA fit on the matrix in memory;
    ``featurize_pca`` (scores of every vector, committed) vs numpy's
    ``(X - mean) @ V.T`` in memory;
(c) **similarity**: ``similar(lake, id, k=10)`` (cosine distances of N CDF
    vectors in DuckDB, warm query engine) vs numpy brute force on the matrix
    in memory; the two rankings are checked to be the same.

Variants take turns round by round (``--repeat`` rounds, ``--repeat-large`` for
50,000 spectra and more) and the medians are reported with their ratios; the featurize runs after the first use ``force``,
so each round commits N new versions.  Benchmarks measure; they do not assert
(beyond the result checks).

Run: ``.venv/bin/python bench/bench_spectra.py [--sizes 10000,100000] [--repeat 3] [--quick] [--blas-threads 1]
[--json]``
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timing, emit_json, format_machine, machine_info, table, time_call  # noqa: E402

GRID = "xanes-ni-k"


def make_intensities(n: int, grid: np.ndarray, seed: int) -> np.ndarray:
    """``n`` positive XANES-like spectra on ``grid`` (eV): arctan edge at a random E0, a white
    line of random height, Gaussian noise (sigma 0.01); dimensionless."""
    rng = np.random.default_rng(seed)
    e0 = rng.uniform(grid[0] + 8, grid[-1] - 15, n)[:, None]
    height = rng.uniform(0.3, 2.0, n)[:, None]
    edge = 0.5 + np.arctan((grid - e0) / 1.5) / np.pi
    white = height * np.exp(-0.5 * ((grid - e0 - 3.0) / 2.0) ** 2)
    return np.abs(0.02 + edge + white + rng.normal(0, 0.01, (n, len(grid))))


def _lists(matrix: np.ndarray) -> pa.Array:
    """Rows of ``matrix`` as an Arrow list<double> column, without a Python loop."""
    n, m = matrix.shape
    offsets = pa.array(np.arange(0, (n + 1) * m, m, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel()))


def spectra_table(Y: np.ndarray, grid: np.ndarray, ids: list[str]) -> pa.Table:
    n = len(ids)
    return pa.table({
        "record_id": pa.array(ids), "technique": pa.array(["xanes"] * n), "element": pa.array(["Ni"] * n),
        "edge": pa.array(["K"] * n), "axis": _lists(np.broadcast_to(grid, Y.shape)),
        "axis_unit": pa.array(["eV"] * n), "axis_quantity": pa.array(["energy"] * n), "intensity": _lists(Y),
        "intensity_unit": pa.array(["mu"] * n), "intensity_quantity": pa.array(["mu"] * n),
        "n_points": pa.array(np.full(n, len(grid), np.int32)), "axis_min": pa.array(np.full(n, grid[0])),
        "axis_max": pa.array(np.full(n, grid[-1])), "source_kind": pa.array(["generated"] * n),
        "code": pa.array(["bench_spectra"] * n), "sample": pa.array([f"s{i % 97}" for i in range(n)]),
    })


def processed_table(Y: np.ndarray, grid: np.ndarray, ids: list[str], pids: list[str]) -> pa.Table:
    n = len(ids)
    return pa.table({
        "record_id": pa.array(pids), "subject_id": pa.array(ids), "subject_version": pa.array(np.ones(n, np.int32)),
        "pipeline": pa.array(["bench"] * n), "steps_json": pa.array(["[]"] * n), "grid_name": pa.array([GRID] * n),
        "axis": _lists(np.broadcast_to(grid, Y.shape)), "axis_unit": pa.array(["eV"] * n), "intensity": _lists(Y),
        "intensity_quantity": pa.array(["normalized mu"] * n), "n_points": pa.array(np.full(n, len(grid), np.int32)),
    })


def commit_table(lake: Any, table_name: str, rows: pa.Table, message: str) -> None:
    from matlake.platform.lake import ChangeSet

    cs = ChangeSet("bench", message)
    act = cs.activity("generate", "bench_spectra", "1", parameters={"rows": rows.num_rows})
    cs.add_rows(table_name, rows, act, version=1)
    lake.commit(cs)


def round_robin(variants: list[tuple[str, Any]], repeat: int,
                setups: dict[str, Any] | None = None) -> dict[str, tuple[Timing, Any]]:
    """Each variant ``repeat`` times, one of each per round (load on a shared machine hits all alike)."""
    out = {name: (Timing(name), None) for name, _ in variants}
    for _ in range(repeat):
        for name, fn in variants:
            t, result = time_call(fn, 1, name, setup=(setups or {}).get(name))
            out[name][0].samples.extend(t.samples)
            out[name] = (out[name][0], result)
    return out


def numpy_cdf(Y: np.ndarray) -> np.ndarray:
    return np.cumsum(Y, axis=1) / Y.sum(axis=1)[:, None]


def numpy_similar(X: np.ndarray, q: int, k: int) -> np.ndarray:
    """Indices of the ``k`` rows nearest to row ``q`` by cosine distance (q excluded)."""
    norms = np.linalg.norm(X, axis=1)
    d = 1.0 - (X @ X[q]) / (norms * norms[q])
    d[q] = np.inf
    part = np.argpartition(d, k)[:k]
    return part[np.argsort(d[part], kind="stable")]


def run_size(n: int, repeat: int, workdir: Path) -> dict[str, Any]:
    from sklearn.decomposition import PCA

    from matlake.models.base import derived_record_id
    from matlake.models.spectra import featurize as fz
    from matlake.models.spectra.grids import BUILTIN_GRIDS
    from matlake.platform.lake import Lake

    grid = BUILTIN_GRIDS[GRID].array
    Y = make_intensities(n, grid, seed=n)
    ids = [derived_record_id("bench_spectra", str(i)) for i in range(n)]
    pids = [derived_record_id("bench_process", i, GRID) for i in ids]
    rows = spectra_table(Y, grid, ids)
    root = Path(tempfile.mkdtemp(prefix="matlake-bench-spectra-", dir=workdir))
    out: dict[str, Any] = {"n": n}
    try:
        # (a) commit N spectra into a fresh lake vs write_table of the same rows
        lakes: list[Path] = []

        def fresh_lake() -> None:
            lakes.append(root / f"lake{len(lakes)}")
            Lake.init(lakes[-1]).close()

        def lake_commit() -> None:
            lk = Lake.open(lakes[-1])
            try:
                commit_table(lk, "spectra", rows, f"{n} generated spectra")
            finally:
                lk.close()

        pq_path = root / "plain.parquet"
        commit = round_robin([("lake commit", lake_commit),
                              ("pyarrow.parquet.write_table", lambda: pq.write_table(rows, pq_path))],
                             repeat, setups={"lake commit": fresh_lake})
        out["commit"] = {k: t for k, (t, _) in commit.items()}

        # (b) featurize: the last lake gets processed rows; CDF, PCA fit, PCA scores
        lake = Lake.open(lakes[-1])
        commit_table(lake, "spectra_processed", processed_table(Y, grid, ids, pids), "processed on the grid")
        first = {"force": False}

        def lake_cdf() -> Any:
            rep = fz.featurize_spectra(lake, "cdf", GRID, force=first["force"])
            first["force"] = True
            if rep.n_subjects != n or rep.errors:
                raise RuntimeError(f"cdf featurize: expected {n} spectra, found {rep.n_subjects}, errors "
                                   f"{list(rep.errors.items())[:3]}")
            return rep

        feats = round_robin([("featurize cdf (lake)", lake_cdf), ("cdf numpy in memory", lambda: numpy_cdf(Y))],
                            repeat)
        X = feats["cdf numpy in memory"][1]
        stored = lake.sql("select spectrum_id, vector from spectrum_features where featurizer = 'cdf' "
                          "order by spectrum_id").arrow()
        order = np.argsort(ids)
        Xs = np.asarray(stored.column("vector").combine_chunks().flatten()).reshape(n, -1)
        if not np.allclose(Xs, X[order], rtol=0, atol=1e-12):
            raise RuntimeError("stored CDF vectors differ from numpy's")

        models: list[Any] = []
        pca_fit = round_robin([
            ("fit_pca 10 components (lake, model version)",
             lambda: models.append(fz.fit_pca(lake, "cdf", GRID, 10)) or models[-1]),
            ("sklearn PCA fit in memory", lambda: PCA(n_components=10, svd_solver="covariance_eigh").fit(X)),
        ], repeat)
        ref_pca = pca_fit["sklearn PCA fit in memory"][1]
        info = models[-1]
        ratios = [info.metrics[f"explained_variance_ratio_{k + 1}"] for k in range(10)]
        if not np.allclose(ratios, ref_pca.explained_variance_ratio_, rtol=1e-8):
            raise RuntimeError("explained variance ratios differ between the lake model and sklearn")
        pca_first = {"force": False}

        def lake_pca() -> Any:
            rep = fz.featurize_pca(lake, info.model_id, force=pca_first["force"])
            pca_first["force"] = True
            if rep.n_subjects != n:
                raise RuntimeError(f"pca featurize: expected {n} vectors, found {rep.n_subjects}")
            return rep

        pca_scores = round_robin([
            ("featurize pca scores (lake)", lake_pca),
            ("pca scores numpy in memory", lambda: (X - ref_pca.mean_) @ ref_pca.components_.T),
        ], repeat)
        out["featurize"] = {**{k: t for k, (t, _) in feats.items()}, **{k: t for k, (t, _) in pca_fit.items()},
                            **{k: t for k, (t, _) in pca_scores.items()}}

        # (c) similarity: DuckDB over N stored CDF vectors vs numpy brute force
        q = n // 3
        lake.sql("select 1").fetchall()  # the query engine of the latest snapshot, built once
        sim = round_robin([
            ("similar k=10 (DuckDB, warm)", lambda: fz.similar(lake, ids[q], k=10, feature="cdf")),
            ("numpy brute force in memory", lambda: numpy_similar(X, q, 10)),
        ], max(repeat, 3))
        got = list(sim["similar k=10 (DuckDB, warm)"][1]["spectrum_id"])
        want = [ids[i] for i in sim["numpy brute force in memory"][1]]
        if got != want:
            raise RuntimeError(f"similarity rankings differ: lake {got[:3]}..., numpy {want[:3]}...")
        out["similarity"] = {k: t for k, (t, _) in sim.items()}
        lake.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


PAIRS = [  # (section, lake variant, in-memory reference)
    ("commit", "lake commit", "pyarrow.parquet.write_table"),
    ("featurize", "featurize cdf (lake)", "cdf numpy in memory"),
    ("featurize", "fit_pca 10 components (lake, model version)", "sklearn PCA fit in memory"),
    ("featurize", "featurize pca scores (lake)", "pca scores numpy in memory"),
    ("similarity", "similar k=10 (DuckDB, warm)", "numpy brute force in memory"),
]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated numbers of spectra (default 10^4,10^5)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds per comparison (default 3)")
    ap.add_argument("--repeat-large", type=int, default=1,
                    help="rounds for sizes of 50,000 spectra and more (default 1: a 10^5 round takes minutes "
                         "on a loaded 2-core machine)")
    ap.add_argument("--quick", action="store_true", help="sizes 2000,10000 and 2 rounds (a smoke run, ~1 min)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()), help="where the lakes are made")
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="limit BLAS threads (threadpoolctl); on a shared, loaded machine OpenBLAS threads that "
                         "wait for each other make a 10^5 x 100 Gram matrix 50x slower (default: the library's)")
    ap.add_argument("--json", action="store_true", help="print a JSON record instead of tables")
    args = ap.parse_args(argv)
    if args.blas_threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.blas_threads)
    sizes = [2000, 10000] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    repeat = 2 if args.quick else args.repeat

    info = machine_info()
    # imports out of the timed rounds (skops walks scikit-learn's estimators on import)
    import skops.io  # noqa: F401
    import sklearn.decomposition  # noqa: F401

    import matlake.models.spectra.featurize  # noqa: F401
    import matlake.platform.modeling  # noqa: F401

    t0 = time.perf_counter()
    results = [run_size(n, repeat if n < 50_000 else args.repeat_large, args.workdir) for n in sizes]
    total = time.perf_counter() - t0
    payload = {"benchmark": "spectra", "machine": info, "grid": GRID, "repeat": repeat, "total_s": total,
               "blas_threads": args.blas_threads,
               "sizes": [{"n": r["n"], **{sec: {k: t.as_dict() for k, t in r[sec].items()}
                                          for sec in ("commit", "featurize", "similarity")}} for r in results]}
    if args.json:
        emit_json(payload)
        return payload

    print(format_machine(info))
    print(f"\nspectra on the {GRID} grid (100 points); medians of interleaved rounds (similarity: at least 3); "
          f"BLAS threads {args.blas_threads or 'default'}; total {total:.0f} s.\n")
    rows = []
    for r in results:
        for sec, lake_name, ref_name in PAIRS:
            lt, rt = r[sec][lake_name], r[sec][ref_name]
            rows.append([f"{r['n']:,}", len(lt.samples), lake_name, lt.median, f"{r['n'] / lt.median:,.0f}",
                         ref_name, rt.median, f"{lt.median / rt.median:.1f}x"])
    print(table(["spectra", "rounds", "lake", "median (s)", "spectra/s", "in memory / plain", "median (s)",
                 "ratio"], rows))
    if len(results) > 1:
        a, b = results[0], results[-1]
        grow = b["n"] / a["n"]
        print(f"\ngrowth {a['n']:,} -> {b['n']:,} spectra (x{grow:g}): " + ", ".join(
            f"{lake_name} x{b[sec][lake_name].median / a[sec][lake_name].median:.1f}"
            for sec, lake_name, _ in PAIRS))
    return payload


if __name__ == "__main__":
    main()
