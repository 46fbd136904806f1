"""The end-to-end demo behind ``make demo`` / ``matlake demo DIR``.

It builds a lake from data that needs no download: the crystal structures that
ship with pymatgen (written out as CIF and POSCAR files by the demo) and the
sample files in the repository's ``samples/`` folder (VASP runs, charge
densities, Materials Project entries, impedance spectra; attribution and
licences in ``samples/SOURCES.md``).  Then it queries
with SQL, tags the snapshot, trains a model on the tag, writes predictions
back and prints the lineage of one prediction down to the raw bytes.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path

SAMPLE_ENV = "MATLAKE_SAMPLE_DATA"


def _is_clone_root(folder: Path) -> bool:
    return (folder / "samples").is_dir() and (folder / "pyproject.toml").is_file() and (folder / "matlake").is_dir()


def sample_data_dir() -> Path | None:
    """Folder of the sample files (subfolders ``dft``, ``eis``, ...), or None.

    ``$MATLAKE_SAMPLE_DATA`` when set; else ``samples/`` of the clone this
    package was installed from (an editable install, ``make install``); else
    ``samples/`` of a matlake clone at or above the current directory (a
    regular install run from inside a clone).
    """
    env = os.environ.get(SAMPLE_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[1]
    if _is_clone_root(here):
        return here / "samples"
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if _is_clone_root(folder):
            return folder / "samples"
    return None


def write_pymatgen_structures(folder: Path) -> list[Path]:
    """Write the structures pymatgen ships (pymatgen/util/structures/*.json) as CIF and POSCAR."""
    import pymatgen.util
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifWriter

    # pymatgen is a namespace package: locate the data through a regular subpackage.
    src = Path(pymatgen.util.__file__).parent / "structures"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, path in enumerate(sorted(src.glob("*.json"))):
        s = Structure.from_file(path)
        if not s.is_ordered:
            continue
        stem = path.stem.replace("(", "_").replace(")", "_")
        with warnings.catch_warnings():
            # pymatgen warns while writing the formula of He_BCC (no electronegativity for He)
            warnings.filterwarnings("ignore", message="No Pauling electronegativity", category=UserWarning)
            if i % 2 == 0:
                target = folder / f"{stem}.cif"
                CifWriter(s).write_file(target)
            else:
                target = folder / f"{stem}.POSCAR"
                s.to(filename=str(target), fmt="poscar")
        out.append(target)
    return out


def _step(title: str) -> None:
    print(f"\n=== {title}")


def run(directory: str | os.PathLike, force: bool = False) -> dict:
    import matlake
    from matlake.models.dft.composition import CompositionRegressor
    from matlake.platform.provenance import lineage, render_tree

    t0 = time.perf_counter()
    root = Path(directory).resolve()
    if root.exists() and any(root.iterdir()):
        if not force:
            raise FileExistsError(f"{root} is not empty (use --force to rebuild the demo there)")
        shutil.rmtree(root)
    _step(f"1. create a lake at {root}")
    lake = matlake.init(root / "lake")
    print(lake)

    _step("2. ingest: pymatgen's structures (written as CIF/POSCAR) and the sample files")
    incoming = root / "incoming"
    files = write_pymatgen_structures(incoming / "structures")
    print(f"wrote {len(files)} structure files to {incoming / 'structures'}")
    sources = [incoming]
    data = sample_data_dir()
    if data is not None:
        for sub in ("dft", "eis"):
            if (data / sub).exists():
                sources.append(data / sub)
    else:
        print("(no samples/ folder found: run from a matlake clone, or set MATLAKE_SAMPLE_DATA "
              "to a folder with dft/ and eis/ to add VASP and EIS samples)")
    report = lake.ingest(sources, workers=2, progress=False)
    print(report.summary())
    for o in report.outcomes:
        if o.status in ("failed", "error"):
            print(f"  {o.status}:", o.message)
    again = lake.ingest(sources, progress=False)
    print(f"re-ingest of the same folders: {again.summary()}")

    _step("3. SQL over the lake (DuckDB)")
    print(lake.sql("select reduced_formula, run_type, round(energy_per_atom, 4) as e_per_atom_eV, "
                   "round(band_gap, 3) as gap_eV, spacegroup_symbol from dft "
                   "where code = 'VASP' order by energy_per_atom limit 10").df().to_string(index=False))
    counts = lake.sql("select (select count(*) from structures) structures, (select count(*) from calculations) "
                      "calculations, (select count(*) from volumetric) volumetric, (select count(*) from impedance) "
                      "impedance").df()
    print(counts.to_string(index=False))

    _step("4. tag the snapshot and train a model on exactly that data")
    sid = lake.tag("demo-training", note="data the demo model was trained on")
    print(f"tag demo-training -> snapshot {sid}")
    info = None
    n_train = lake.sql("select count(*) from calculations where energy_per_atom is not null").fetchone()[0]
    if n_train >= 3:
        info = lake.train(CompositionRegressor(n_estimators=100), as_of="demo-training")
        print(f"model {info.model_id}: {info.name} v{info.version}, view SQL + snapshot {info.snapshot_id}, "
              f"{info.n_train} rows, cv MAE {info.metrics['cv_mae']:.3f} eV/atom "
              f"(predicting the mean: {info.metrics['baseline_mae']:.3f})")
        out = lake.predict(info.model_id)
        print(f"{out['n']} predictions committed in snapshot {out['snapshot']}")
        print(lake.sql("select s.reduced_formula, round(p.value, 3) as predicted_e_per_atom, "
                       "round(p.uncertainty, 3) as sigma, s.source_name from predictions p "
                       "join structures s on s.record_id = p.subject_id order by s.reduced_formula limit 10")
              .df().to_string(index=False))
    else:
        print(f"only {n_train} labelled calculations: not enough to train (add the samples/ folder)")

    if lake.sql("select count(*) from impedance").fetchone()[0]:
        from matlake.models.eis.analysis import analyze

        _step("5. impedance spectra: Kramers-Kronig validity, complex-analysis features, a circuit fit")
        analyze(lake)  # every spectrum: lin-KK, rational-function features, DRT
        analyze(lake, where="source_name = 'impedancepy_exampleData.csv'", circuit="R0-p(R1,C1)-p(R2-Wo1,C2)")
        print(lake.sql("select source_name, n_points, kk_m, round(kk_mu, 3) as kk_mu, kk_valid, inductive, "
                       "n_inductive_points, n_time_constants, round(cpe_alpha, 2) as cpe_alpha, fit_reliable, circuit "
                       "from eis_summary order by source_name").df().to_string(index=False))
        print(lake.sql("select name, value, stderr, unit from eis_fit_parameters")
              .df().to_string(index=False))

    _step("6. lineage of one prediction, down to the raw bytes")
    pick = None
    if info is not None:
        pick = lake.sql("select p.record_id from predictions p join structures s on s.record_id = p.subject_id "
                        "order by (s.source_name like '%.cif') desc, s.reduced_formula limit 1").fetchone()
    if pick:
        g = lineage(lake, pick[0], direction="up", max_fanout=4)
        print(render_tree(g, "up"))
    print(f"\ndemo finished in {time.perf_counter() - t0:.1f} s; try:\n"
          f"  matlake sql \"select * from dft limit 5\" --lake {lake.root}\n"
          f"  matlake lineage <record_id> --lake {lake.root}")
    return {"lake": lake, "model": info, "prediction": pick[0] if pick else None}


def register(sub, common) -> None:
    s = sub.add_parser("demo", parents=[common], help="build the demo lake end to end (no download)")
    s.add_argument("dir", nargs="?", default="demo-lake")
    s.add_argument("--force", action="store_true", help="replace an existing demo folder")
    s.set_defaults(func=lambda args: (run(args.dir, force=args.force), 0)[1])
