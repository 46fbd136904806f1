"""Platform side: structure records selected by SQL → FEFF10 XANES per absorbing site → committed spectra.

For each structure record and each symmetry-inequivalent site of the chosen
element, :func:`compute` writes the FEFF input (``MPXANESSet``, parameters
recorded), runs FEFF10 in a work folder (in this process, a ``spawn`` pool of
local processes, or a Dask cluster) and commits **each site as soon as it is
done**, in one commit of two activities:

- ``feff-site`` (kind ``compute``): *used* the structure record at its version,
  *generated* the FEFF input object and the site's ``spectrum_labels`` rows;
- ``feff`` (kind ``compute``): *used* the structure record and the input object,
  *generated* the ``spectra`` row and the ``xmu.dat`` and log objects.

So a crash (even SIGKILL) loses at most the sites in flight, and a re-run skips
every site whose spectrum record (id from structure, element, edge, site and
parameter digest) already holds this structure version.  A FEFF failure commits
the ``feff`` activity with status ``failed``, FEFF's log tail as its error, the
input and log objects kept, and no rows; a re-run skips it unless
``retry_failed``.  Bad requests (an unsupported edge, a structure without the
element, SQL selecting nothing) raise or are reported as one line each before
any FEFF run, and nothing is committed for them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from matlake.models.base import derived_record_id
from matlake.models.feff.inputs import FeffInputError, FeffParameters, absorbing_sites, check_edge, feff_input
from matlake.models.feff.labels import LabelError, oxidation_states, site_labels

if TYPE_CHECKING:
    from matlake.models.feff.runner import FeffRun
    from matlake.platform.lake import Lake

COMPUTE_VERSION = "1.0.0"
PRODUCER = "feff"  # record ids: derived_record_id(PRODUCER, structure_id, site key)
CODE = "FEFF 10.0"
ACTIVITY_KIND = "compute"


@dataclass
class SiteJob:
    """One absorbing site to compute (everything but the FEFF run, prepared in the parent)."""

    structure_id: str
    structure_version: int
    structure_name: str
    site_index: int
    multiplicity: int
    element: str
    spectrum_id: str
    input_text: str
    labels: list[dict[str, Any]]
    label_errors: list[str]


@dataclass
class ComputeReport:
    """What one :func:`compute` call did."""

    snapshot_read: int
    computed: list[str] = field(default_factory=list)  # spectra record ids committed
    failed: dict[str, str] = field(default_factory=dict)  # spectrum id -> error line
    skipped: int = 0  # sites already computed (or failed before) with these parameters
    errors: list[str] = field(default_factory=list)  # one line per structure that gave no site
    seconds: dict[str, float] = field(default_factory=dict)  # spectrum id -> FEFF wall seconds
    snapshots: list[int] = field(default_factory=list)


def site_key(element: str, params: FeffParameters, site_index: int) -> str:
    """The key of a site's spectrum among the structure's: element, edge, site, parameter digest."""
    return f"{element}:{params.edge}:site{site_index}:{params.digest()}"


def spectrum_record_id(structure_id: str, element: str, params: FeffParameters, site_index: int) -> str:
    return derived_record_id(PRODUCER, structure_id, site_key(element, params, site_index))


def _structures(lake: "Lake", where: str | None, sid: int) -> list[dict[str, Any]]:
    sql = ("select record_id, version, structure_json, reduced_formula, material_id, source_name "
           "from structures" + (f" where {where}" if where else "") + " order by record_id")
    return lake.sql(sql, as_of=sid).df().to_dict("records")


def _done_and_failed(lake: "Lake") -> tuple[dict[str, int], set[str]]:
    """Spectrum ids already computed (-> the structure version they came from) and those whose
    last attempt failed, read at the latest snapshot (other runs may have committed meanwhile)."""
    sid = lake.last_snapshot()
    done: dict[str, int] = {}
    try:
        rows = lake.sql("select record_id, metadata_json from spectra where source_kind = 'computed' "
                        f"and code = '{CODE}'", as_of=sid).fetchall()
    except Exception as exc:  # noqa: BLE001 - a lake without a spectra table yet has nothing done
        if "spectra" not in str(exc):
            raise
        rows = []
    for rid, meta in rows:
        done[str(rid)] = int(json.loads(meta or "{}").get("structure_version", 0))
    failed: set[str] = set()
    acts = lake.sql("select status, parameters_json from activities where kind = ? and name = ? "
                    "order by started_at", as_of=sid, params=[ACTIVITY_KIND, PRODUCER]).fetchall()
    for status, params in acts:
        sp = json.loads(params).get("spectrum_id")
        if status == "failed":
            failed.add(sp)
        else:
            failed.discard(sp)
    return done, failed


def prepare(lake: "Lake", element: str, params: FeffParameters, where: str | None = None,
            as_of: int | str | None = None, retry_failed: bool = False) -> tuple[list[SiteJob], ComputeReport]:
    """The sites to compute: structures selected by ``where`` (SQL on ``structures``) at ``as_of``,
    their inequivalent ``element`` sites, minus those already done (or failed) with ``params``."""
    from pymatgen.core import Structure

    check_edge(params.edge)
    sid = lake.resolve_snapshot(as_of) if as_of is not None else lake.last_snapshot()
    report = ComputeReport(snapshot_read=sid)
    records = _structures(lake, where, sid)
    if not records:
        raise FeffInputError(f"structures{' where ' + where if where else ''}: expected at least one structure "
                             f"record at snapshot {sid}, found none")
    done, failed = _done_and_failed(lake)
    jobs: list[SiteJob] = []
    for rec in records:
        name = f"structure {rec['record_id']} ({rec['reduced_formula']}, {rec['source_name'] or rec['material_id']})"
        structure = Structure.from_dict(json.loads(rec["structure_json"]))
        try:
            sites = absorbing_sites(structure, element, where=name)
        except FeffInputError as exc:
            report.errors.append(str(exc))
            continue
        bva = None
        for index, mult in sites:
            sp_id = spectrum_record_id(rec["record_id"], element, params, index)
            if done.get(sp_id) == int(rec["version"]) or (sp_id in failed and not retry_failed):
                report.skipped += 1
                continue
            if bva is None:  # once per structure: the bond-valence analysis is the slow part
                try:
                    bva = oxidation_states(structure, name)
                except LabelError as exc:
                    bva = exc
            labels, label_errors = _labels(structure, index, name, bva)
            jobs.append(SiteJob(rec["record_id"], int(rec["version"]), name, index, mult, element, sp_id,
                                feff_input(structure, index, params), labels, label_errors))
    return jobs, report


def _labels(structure, index: int, where: str, bva) -> tuple[list[dict[str, Any]], list[str]]:
    labels, errors = site_labels(structure, index, where, bva)
    return [lab.__dict__ for lab in labels], errors


def _run_one(input_text: str, stage_timeout: float | None) -> "FeffRun":
    from matlake.models.feff.runner import run_feff

    return run_feff(input_text, stage_timeout=stage_timeout)


def _results(jobs: list[SiteJob], workers: int, dask_address: str | None,
             stage_timeout: float | None) -> Iterator[tuple[SiteJob, "FeffRun"]]:
    """FEFF runs as they finish: in this process, a spawn pool of ``workers`` or a Dask cluster."""
    if dask_address:
        from distributed import Client, as_completed

        with Client(dask_address) as client:
            futs = {client.submit(_run_one, j.input_text, stage_timeout, pure=False): j for j in jobs}
            for fut in as_completed(futs):
                yield futs[fut], fut.result()
        return
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield job, _run_one(job.input_text, stage_timeout)
        return
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as pool:
        pending: dict[Future, SiteJob] = {pool.submit(_run_one, j.input_text, stage_timeout): j for j in jobs}
        while pending:
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in finished:
                yield pending.pop(fut), fut.result()


def compute(lake: "Lake", element: str = "Ni", params: FeffParameters | None = None, where: str | None = None,
            as_of: int | str | None = None, workers: int = 1, dask_address: str | None = None,
            retry_failed: bool = False, stage_timeout: float | None = None, progress: bool = False,
            limit: int | None = None) -> ComputeReport:
    """Compute and commit the XANES of every not-yet-computed inequivalent ``element`` site of the
    structures selected by ``where`` (see the module docstring).  ``limit`` caps the sites run now."""
    from matlake.models.feff.runner import require_feff

    params = params or FeffParameters()
    jobs, report = prepare(lake, element, params, where, as_of, retry_failed)
    if limit is not None:
        jobs = jobs[:limit]
    if not jobs:
        return report
    require_feff()
    import sys

    for i, (job, run) in enumerate(_results(jobs, workers, dask_address, stage_timeout), 1):
        started = datetime.now(timezone.utc) - timedelta(seconds=run.seconds)  # when this site's FEFF run began
        sid = commit_site(lake, job, run, params, report.snapshot_read, started)
        report.seconds[job.spectrum_id] = run.seconds
        if sid is not None:
            report.snapshots.append(sid)
        if run.ok:
            report.computed.append(job.spectrum_id)
        else:
            report.failed[job.spectrum_id] = run.error
        if progress:
            state = "ok" if run.ok else f"FAILED ({run.error})"
            print(f"[{i}/{len(jobs)}] {job.structure_name} site {job.site_index}: {state}, {run.seconds:.1f} s",
                  file=sys.stderr, flush=True)
    return report


def spectrum_row(job: SiteJob, run: "FeffRun", params: FeffParameters, input_sha: str,
                 output_shas: dict[str, str]) -> dict[str, Any]:
    """The ``spectra`` row of a finished site (energies in eV, mu from ``xmu.dat``)."""
    from matlake.models.feff.runner import feff_version

    code_params = {"element": job.element, "edge": params.edge, "absorbing_site": job.site_index,
                   **params.record()}
    return {
        "record_id": job.spectrum_id, "technique": "xanes", "element": job.element, "edge": params.edge,
        "axis": list(run.energy), "axis_unit": "eV", "axis_quantity": "energy",
        "intensity": list(run.mu), "intensity_unit": "arb", "intensity_quantity": "xmu",
        "n_points": len(run.energy), "axis_min": float(run.energy[0]), "axis_max": float(run.energy[-1]),
        "measurement_mode": None, "source_kind": "computed", "code": CODE, "code_version": feff_version(),
        "code_parameters_json": json.dumps(code_params, sort_keys=True),
        "structure_id": job.structure_id, "absorbing_site": job.site_index,
        "sample": job.structure_name, "file_format": "feff-xmu",
        "metadata_json": json.dumps({"structure_version": job.structure_version, "multiplicity": job.multiplicity,
                                     "input_sha256": input_sha, "outputs": output_shas,
                                     "mu_normalisation": "xmu.dat mu: normalised at E0 + 50 eV by FEFF",
                                     "feff_seconds": round(run.seconds, 2), "label_errors": job.label_errors},
                                    sort_keys=True),
    }


def label_rows(job: SiteJob) -> list[dict[str, Any]]:
    return [{"record_id": derived_record_id(PRODUCER + "-label", job.spectrum_id, lab["name"]),
             "subject_id": job.spectrum_id, "label": lab["name"], "value": float(lab["value"]),
             "value_text": lab["text"], "unit": lab["unit"], "method": lab["method"]} for lab in job.labels]


def commit_site(lake: "Lake", job: SiteJob, run: "FeffRun", params: FeffParameters, snapshot_read: int,
                started: datetime | None = None) -> int | None:
    """Commit one site: the input, labels and (when FEFF succeeded) the spectrum, or the failure.

    Two activities in one commit (``platform.derivation.commit_activities``): ``feff-site`` used the
    structure and generated the FEFF input object and the labels; ``feff`` used the structure and
    the input and generated the spectrum and FEFF's output objects (status ``failed`` with the log
    tail when FEFF failed).
    """
    from matlake.models.feff.runner import feff_version
    from matlake.platform.derivation import ActivitySpec, ObjectSpec, commit_activities

    base = {"spectrum_id": job.spectrum_id, "structure_id": job.structure_id,
            "structure_version": job.structure_version, "element": job.element, "edge": params.edge,
            "absorbing_site": job.site_index, "multiplicity": job.multiplicity, "feff": params.record(),
            "snapshot_id": snapshot_read}
    structure = {("structures", job.structure_id): job.structure_version}
    feff_input = ObjectSpec(job.input_text.encode(), "text/plain", "feff.inp")
    outputs = {name: ObjectSpec(blob, "text/plain", name) for name, blob in run.outputs.items()}
    output_shas = {name: obj.sha256 for name, obj in outputs.items()}
    site = ActivitySpec(PRODUCER + "-site", COMPUTE_VERSION, base, used=structure,
                        generated_entities=[("object", feff_input.sha256)],
                        rows={"spectrum_labels": label_rows(job) if run.ok else []}, started_at=started)
    run_params = {**base, "code_version": feff_version(), "seconds": round(run.seconds, 2),
                  "stage_seconds": {k: round(v, 2) for k, v in run.stage_seconds.items()}}
    if not run.ok:
        run_params["log_tail"] = run.log_tail
    feff_run = ActivitySpec(
        PRODUCER, COMPUTE_VERSION, run_params, used=structure, used_entities=[("object", feff_input.sha256)],
        generated_entities=[("object", sha) for sha in output_shas.values()],
        rows={"spectra": [spectrum_row(job, run, params, feff_input.sha256, output_shas)] if run.ok else []},
        status="ok" if run.ok else "failed",
        error="" if run.ok else f"{job.structure_name} site {job.site_index}: {run.error}\n{run.log_tail}",
        started_at=started)
    return commit_activities(lake, kind=ACTIVITY_KIND, message=f"feff {job.structure_name} site {job.site_index}",
                             activities=[site, feff_run], objects=[feff_input, *outputs.values()])
