"""The shipped computed Ni K-edge set: export from a lake, load into a lake without running FEFF.

The file (``samples/computed/ni_k_feff/ni_k_feff.json.gz``) holds, for every
computed site, the ``spectra`` row, its ``spectrum_labels`` rows, the FEFF input
text and the parameters of the two activities that made them (``feff-site`` and
``feff``), plus the structure files the spectra were computed from (shipped next
to it in ``structures/``, the exact bytes that were ingested, so a load gives
the same structure record ids).  FEFF scratch files and ``xmu.dat`` are not
shipped: the spectrum arrays are in the rows.

:func:`load` ingests the structure files, then replays each site in one commit:
the same two activities (parameters as computed, plus where they were imported
from), each *using* the dataset file's object and the structure record, the
input text kept as an object.  So lineage in the loaded lake reaches the
structure, the FEFF input bytes and the shipped file, and
:func:`matlake.models.feff.compute.compute` on the loaded lake finds every site
done.  Loading twice adds nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matlake.models.feff.compute import ACTIVITY_KIND, CODE, PRODUCER

if TYPE_CHECKING:
    from matlake.platform.lake import Lake

FORMAT = "matlake-computed-spectra/1"
LOADER_VERSION = "1.0.0"
DATASET_DIR = Path(__file__).resolve().parents[3] / "samples" / "computed" / "ni_k_feff"
DATASET_FILE = DATASET_DIR / "ni_k_feff.json.gz"


class DatasetError(ValueError):
    """A dataset file that cannot be loaded; the message names the file, the field and what was found."""


def _jsonable(v: Any) -> Any:
    import pandas as pd

    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        return v.tolist()
    if v is None or (not isinstance(v, (list, tuple, dict)) and pd.isna(v)):  # None, NaN, NaT
        return None
    if isinstance(v, datetime):
        return v.isoformat()
    return v


def _row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON values, without the version and the empty columns."""
    out = {k: _jsonable(v) for k, v in row.items() if k != "version"}
    return {k: v for k, v in out.items() if v is not None}


def export(lake: "Lake", out: str | Path, structures_dir: str | Path, recipe: dict[str, Any] | None = None,
           as_of: int | str | None = None) -> dict[str, int]:
    """Write every computed FEFF spectrum of the lake (latest versions at ``as_of``) with its labels,
    input text and activities to ``out`` (gzipped JSON).  ``structures_dir`` is where the
    structure files (by their ingested source name) are, relative paths stored from ``out``'s folder."""
    out = Path(out)
    sid = lake.resolve_snapshot(as_of) if as_of is not None else lake.last_snapshot()
    spectra = lake.sql(f"select * exclude (activity_id, schema_version, created_at) from spectra "
                       f"where source_kind = 'computed' and code = '{CODE}' order by record_id", as_of=sid).df()
    ids = list(spectra["record_id"])
    labels = lake.sql("select * exclude (activity_id, schema_version, created_at) from spectrum_labels "
                      "where subject_id in (select unnest(?)) order by subject_id, label",
                      as_of=sid, params=[ids]).df()
    acts = lake.sql("select activity_id, kind, name, agent_version, parameters_json, status, error, started_at, "
                    "ended_at from activities where kind = ? and name in (?, ?) order by started_at",
                    as_of=sid, params=[ACTIVITY_KIND, PRODUCER, PRODUCER + "-site"]).df()
    structs = lake.sql("select record_id, version, source_name, source_sha256 from structures "
                       "where record_id in (select distinct structure_id from spectra where source_kind = 'computed')",
                       as_of=sid).df()
    sdir = Path(structures_dir)
    structures = {}
    for r in structs.to_dict("records"):
        path = sdir / Path(r["source_name"]).name
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != r["source_sha256"]:
            raise DatasetError(f"{path}: structure file: expected the ingested bytes (sha256 {r['source_sha256']}), "
                               f"found other bytes")
        where = path.relative_to(out.parent) if path.is_relative_to(out.parent) else path
        structures[r["record_id"]] = {"file": str(where), "sha256": r["source_sha256"], "version": int(r["version"])}
    by_spectrum: dict[str, list[dict[str, Any]]] = {}
    for a in acts.to_dict("records"):
        p = json.loads(a["parameters_json"])
        if p.get("spectrum_id") in ids:
            a = {k: _jsonable(v) for k, v in a.items() if k != "parameters_json"}
            a["parameters"] = p
            by_spectrum.setdefault(p["spectrum_id"], []).append(a)
    sites = []
    for row in spectra.to_dict("records"):
        rid = row["record_id"]
        meta = json.loads(row["metadata_json"])
        site_acts = [a for a in by_spectrum.get(rid, []) if a["status"] == "ok"]
        sites.append({
            "spectrum": _row(row),
            "labels": [_row(lab) for lab in labels[labels["subject_id"] == rid].to_dict("records")],
            "feff_input": lake.objects.get(meta["input_sha256"]).decode(),
            "activities": site_acts,
        })
    doc = {"format": FORMAT, "exported_at": datetime.now(timezone.utc).isoformat(), "exported_from_snapshot": sid,
           "recipe": recipe or {}, "structures": structures, "sites": sites}
    out.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same content gives the same bytes (and the same object sha256 when loaded).
    with open(out, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
        gz.write(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
    return {"spectra": len(sites), "labels": int(len(labels)), "structures": len(structures)}


def read(path: str | Path = DATASET_FILE) -> dict[str, Any]:
    """The dataset document; :class:`DatasetError` for a file that is not one."""
    path = Path(path)
    try:
        doc = json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, EOFError, ValueError) as exc:  # unreadable, truncated, not gzip, not JSON
        raise DatasetError(f"{path}: content: expected gzipped JSON of a computed-spectra dataset, found "
                           f"{type(exc).__name__}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise DatasetError(f"{path}: format: expected {FORMAT!r}, found {found!r}")
    return doc


@dataclass
class LoadReport:
    snapshot: int | None
    loaded: int
    skipped: int
    structures_ingested: int


def load(lake: "Lake", path: str | Path = DATASET_FILE) -> LoadReport:
    """Load the dataset at ``path`` into ``lake`` (see the module docstring); idempotent."""
    from matlake.platform.derivation import ActivitySpec, ObjectSpec, commit_activities

    path = Path(path)
    doc = read(path)
    files = [path.parent / s["file"] for s in doc["structures"].values()]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DatasetError(f"{path}: structures: expected the shipped structure files, found {missing[0]} missing")
    rep = lake.ingest([str(f) for f in files])
    sid = lake.last_snapshot()
    have = dict(lake.sql("select record_id, version from structures where record_id in (select unnest(?))",
                         as_of=sid, params=[list(doc["structures"])]).fetchall())
    for rid, s in doc["structures"].items():
        if rid not in have:
            raise DatasetError(f"{path}: structures: expected record {rid} from {s['file']} after ingest, found none "
                               f"(different bytes or parser)")
    try:
        done = {r for (r,) in lake.sql("select record_id from spectra where record_id in (select unnest(?))",
                                       as_of=sid, params=[[s["spectrum"]["record_id"] for s in doc["sites"]]]
                                       ).fetchall()}
    except Exception as exc:  # noqa: BLE001 - no spectra table yet: nothing loaded before
        if "spectra" not in str(exc):
            raise
        done = set()
    todo = [s for s in doc["sites"] if s["spectrum"]["record_id"] not in done]
    if not todo:
        return LoadReport(None, 0, len(doc["sites"]), rep.new)
    dataset = ObjectSpec(path.read_bytes(), "application/gzip", path.name)
    dataset_sha = dataset.sha256
    objects, activities = [dataset], []
    for site in todo:
        row = dict(site["spectrum"])
        sp_id, st_id = row["record_id"], row["structure_id"]
        st_ver = int(have[st_id])
        meta = json.loads(row["metadata_json"])
        meta["structure_version"] = st_ver
        row["metadata_json"] = json.dumps(meta, sort_keys=True)
        feff_input = ObjectSpec(site["feff_input"].encode(), "text/plain", "feff.inp")
        if feff_input.sha256 != meta["input_sha256"]:
            raise DatasetError(f"{path}: sites[{sp_id}].feff_input: expected sha256 {meta['input_sha256']}, "
                               f"found {feff_input.sha256}")
        objects.append(feff_input)
        originals = {a["name"]: a for a in site["activities"]}
        for name in (PRODUCER + "-site", PRODUCER):
            orig = originals.get(name, {})
            params = {**orig.get("parameters", {}), "imported_from": {"file": path.name, "sha256": dataset_sha,
                                                                      "activity_id": orig.get("activity_id"),
                                                                      "computed_at": orig.get("started_at")}}
            is_site = name == PRODUCER + "-site"
            activities.append(ActivitySpec(
                name, orig.get("agent_version", LOADER_VERSION), params, used={("structures", st_id): st_ver},
                used_entities=[("object", dataset_sha)] + ([] if is_site else [("object", feff_input.sha256)]),
                generated_entities=[("object", feff_input.sha256)] if is_site else [],
                rows={"spectrum_labels": site["labels"]} if is_site else {"spectra": [row]}))
    snapshot = commit_activities(lake, kind=ACTIVITY_KIND, activities=activities, objects=objects,
                                 message=f"computed spectra dataset {path.name}: {len(todo)} sites")
    return LoadReport(snapshot, len(todo), len(doc["sites"]) - len(todo), rep.new)
