"""The lake side of the speckle simulator: simulated data sets as ``scattering_series`` rows.

:func:`simulate_into` builds a data set (:func:`matlake.models.scattering.simulate.build_dataset`)
and commits **one series per density class**, whose frames are that class's
patterns (frame ``i`` = pattern ``i`` of the class), under one ``simulate``
activity (:func:`matlake.platform.derivation.commit_activities`):

- frames: a chunked object ``(n_per_class, n_grid, n_grid)`` float32, one chunk per
  frame (``Lake.put_chunked``); the beam-stop mask another (1 = measured);
- ``source_kind = 'simulated'``, ``system = 'disks'``, ``file_format = 'generated'``;
- ``generator_json``: the data set spec (every parameter and the seed), the class
  index and the (disk, noise) seeds of every frame, so any frame regenerates exactly
  (``SpeckleSpec.pattern_params(class_index, frame)``);
- ``label_json``: data set name, class index, number density, the class values,
  polydispersity, counts, method and the achieved area fractions per frame;
- calibration: the simulation has no detector geometry, so only ``q_per_pixel``
  (``2 pi / (box * length_unit_m)``, 1/m) and the beam centre are filled; the
  length unit (one box unit, default 10 nm) is recorded.

The same data set (name + parameters) simulated again is skipped (the earlier
activity is returned), unless ``force``.  The series' record ids are (data set name,
class index), so the same name simulated with other parameters replaces the series by
new versions (the old ones stay readable at earlier snapshots).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from matlake.models.base import derived_record_id
from matlake.models.scattering.simulate import NAME, VERSION, SpeckleSpec, build_dataset

if TYPE_CHECKING:
    from matlake.platform.lake import Lake

DEFAULT_LENGTH_UNIT_M = 1e-8  # one box unit (one real-space grid pixel by default) = 10 nm


def series_record_id(dataset: str, class_index: int) -> str:
    """Record id of class ``class_index``'s series of simulated data set ``dataset``: a data set simulated
    again under the same name with other parameters adds new versions of the same records."""
    return derived_record_id(NAME, dataset, f"class:{class_index}")


def simulate_into(lake: "Lake", spec: SpeckleSpec | Mapping[str, Any], dataset: str = "train",
                  length_unit_m: float = DEFAULT_LENGTH_UNIT_M, force: bool = False) -> dict[str, Any]:
    """Simulate data set ``dataset`` of ``spec`` and commit one ``scattering_series`` row per class.

    Returns ``{"snapshot", "activity_id", "series" (record ids), "n_patterns", "skipped", "dataset"}``.
    """
    from matlake.platform.derivation import ActivitySpec, ObjectSpec, commit_activities, find_same_run

    if not isinstance(spec, SpeckleSpec):
        spec = SpeckleSpec.from_dict(dict(spec))
    if not dataset:
        raise ValueError("a simulated data set needs a name")
    params = {"dataset": dataset, "spec": spec.as_dict(), "length_unit_m": float(length_unit_m)}
    ids = [series_record_id(dataset, k) for k in range(len(spec.number_densities))]
    out: dict[str, Any] = {"dataset": dataset, "series": ids,
                           "n_patterns": spec.n_per_class * len(spec.number_densities)}
    if not force:
        done = find_same_run(lake, "simulate", NAME, VERSION, params, {})
        if done:
            return {**out, "snapshot": None, "activity_id": done, "skipped": True}
    n = spec.n_grid
    mask = None
    objects, rows, generated = [], [], []
    q_per_pixel = 2 * math.pi / (spec.box * length_unit_m)
    for k, density in enumerate(spec.number_densities):
        ds = build_dataset(spec, classes=[k])
        if mask is None:
            mask = lake.put_chunked(ds.mask.astype(np.uint8), chunks=(n, n))
            objects.append(ObjectSpec.stored(mask, media_type=mask.media_type, name=f"{dataset}-beamstop-mask"))
            generated.append(("object", mask.sha256))
        ref = lake.put_chunked(ds.patterns, chunks=(1, n, n))
        objects.append(ObjectSpec.stored(ref, media_type=ref.media_type, name=f"{dataset}-class{k}-frames"))
        generated.append(("object", ref.sha256))
        seeds = [[p["disks"]["seed"], p["noise_seed"]] for p in ds.parameters]
        achieved = [p["achieved"] for p in ds.parameters]
        label = {"dataset": dataset, "class_index": k, "n_classes": len(spec.number_densities),
                 "number_density": float(density), "class_values": [float(v) for v in spec.number_densities],
                 "polydispersity": spec.polydispersity, "counts": spec.counts, "method": spec.method,
                 "radius": spec.radius, "area_fractions": [a["area_fraction"] for a in achieved],
                 "n_disks": [a["n_disks"] for a in achieved]}
        generator = {**params, "class_index": k, "frame_seeds": seeds,
                     "frame_rule": "frame i = SpeckleSpec.pattern_params(class_index, i); seeds = [disk, noise]"}
        rows.append({
            "record_id": ids[k], "source_kind": "simulated", "system": "disks",
            "n_frames": len(ds), "height": n, "width": n, "dtype": str(ds.patterns.dtype),
            "beam_center_x": float(n // 2), "beam_center_y": float(n // 2), "q_per_pixel": q_per_pixel,
            "times": None, "frames_sha256": ref.sha256, "frames_index_sha256": ref.index_sha256,
            "mask_sha256": mask.sha256, "mask_index_sha256": mask.index_sha256,
            "total_counts_mean": float(ds.patterns.sum(axis=(1, 2)).mean()),
            "generator_json": json.dumps(generator, sort_keys=True),
            "label_json": json.dumps(label, sort_keys=True), "sample": dataset,
            "metadata_json": json.dumps({"length_unit_m": length_unit_m, "box_units": spec.box,
                                         "q_per_pixel_rad_per_box_unit": 2 * math.pi / spec.box}),
            "file_format": "generated", "source_name": None, "source_sha256": None, "source_locator": None,
        })
    act = ActivitySpec(name=NAME, version=VERSION, parameters=params, rows={"scattering_series": rows},
                       generated_entities=generated)
    snapshot = commit_activities(lake, kind="simulate", activities=[act], objects=objects,
                                 message=f"simulate speckle data set {dataset!r}: {len(rows)} classes x "
                                         f"{spec.n_per_class} patterns (seed {spec.seed}); not measured data")
    aid = find_same_run(lake, "simulate", NAME, VERSION, params, {})
    return {**out, "snapshot": snapshot, "activity_id": aid, "skipped": False}
