"""Options of ``--kind mask`` sources completed from the lake before the (pure) mask parser runs.

A mask names its micrograph with ``for=IMAGE_ID``, or is paired by ``pair=stem``: the micrograph whose
``source_name`` has the mask's stem once a trailing ``_mask``, ``_label(s)``, ``_gt``, ``_seg``,
``_segmentation`` or ``_annotation`` is dropped (``cell_07_mask.png`` → ``cell_07.tif``; a plain
``cell_07.png`` mask pairs with ``cell_07.tif`` too).  A stem matching several micrographs (two files,
or the frames of a stack) is ambiguous and fails, naming them; so does a stem matching none.

The resolver adds ``image_shape`` ([height, width]) and ``image_version`` (the version the mask is
for), and ``_used`` so the ingest activity *used* that micrograph version (the mask's lineage reaches
the micrograph's raw bytes).  What it cannot resolve goes to the parser as ``_resolve_error``, so
the file still gets its failed ledger row.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matlake.platform.ingestion import SourceItem
    from matlake.platform.lake import Lake


def _micrographs(lake: "Lake") -> list[dict[str, Any]]:
    snapshot = lake.last_snapshot()
    if not lake.files_at(snapshot, "micrographs"):
        return []  # no micrographs yet: the view does not exist
    return lake.sql("select record_id, version, source_name, height, width, frame_index from micrographs",
                    snapshot).arrow().to_pylist()


def resolve(lake: "Lake", items: list["SourceItem"]) -> list[dict[str, Any]]:
    """Options per mask item, with ``image_shape``, ``image_version`` and ``_used`` added."""
    from matlake.ingest.imaging import mask_pair_stem

    rows: list[dict[str, Any]] | None = None
    out = []
    for it in items:
        options = dict(it.options)
        for key in ("image_shape", "image_version", "_used", "_resolve_error"):
            options.pop(key, None)  # only the lake says these
        if rows is None:
            rows = _micrographs(lake)
        target = options.get("for")
        if target in (None, "") and str(options.get("pair", "")).lower() == "stem":
            stem = mask_pair_stem(Path(it.path).name)
            matches = [r for r in rows if r["source_name"] and mask_pair_stem(r["source_name"]) == stem
                       and Path(r["source_name"]).name != Path(it.path).name]
            if len(matches) == 1:
                target = options["for"] = matches[0]["record_id"]
            else:
                names = sorted({f"{r['source_name']} frame {r['frame_index']}" for r in matches})[:5]
                options["_resolve_error"] = (f"{len(matches)} micrographs whose source stem is {stem!r}"
                                             + (f": {names}" if names else " (ingest the image first)"))
                out.append(options)
                continue
        if target in (None, ""):
            out.append(options)  # the parser says what is missing
            continue
        target = str(target)
        options["for"] = target
        found = [r for r in rows if r["record_id"] == target]
        if not found:
            options["_resolve_error"] = f"no micrographs record {target!r} in this lake"
        else:
            r = found[0]
            options["image_shape"] = [int(r["height"]), int(r["width"])]
            options["image_version"] = int(r["version"])
            options["_used"] = [["micrographs", target, int(r["version"])]]
        out.append(options)
    return out
