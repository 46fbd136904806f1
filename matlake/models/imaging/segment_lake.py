"""The lake side of U-net ensemble segmentation: train on (micrograph, mask) pairs, predict maps.

:func:`train` trains a :class:`UNetEnsembleModule` through
:func:`matlake.platform.modeling.train`: the view (default: every pair of the
``image_mask_pairs`` view) is read at one snapshot, the module receives the
image frames and masks through the lake's verified chunk reader
(``load_arrays``), and the model version records the spec (every seed), the
device it trained on, the artifact (ONE safetensors state dict of the
ensemble), the used set of training images and the snapshot.

:func:`predict` segments micrographs with a model version by sliding-window
inference (:func:`matlake.models.imaging.sliding.sliding_window`; the member
probabilities go to a temporary memory map, so large images never sit in
memory), stores the maps as chunked objects and commits one
``segmentation_predictions`` row per image with
:func:`matlake.platform.derivation.commit_activities`: the predict activity
used each micrograph (at its version) and the model version, and generated
the rows and the map objects; the model's train activity used the snapshot
and the training images, so the lineage of a prediction reaches the raw
micrograph bytes.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np
import pandas as pd

from matlake.models.base import TorchModelModule, derived_record_id
from matlake.models.imaging.ensemble import EnsembleSpec

if TYPE_CHECKING:
    from matlake.platform.lake import Lake
    from matlake.platform.modeling import ModelInfo

PREDICT_NAME = "unet_ensemble_predict"
PREDICT_VERSION = "1"

TRAIN_SQL = """
select p.image_id as subject_id, p.image_version, p.mask_id, p.mask_version, p.frame_index,
       p.array_sha256, p.array_index_sha256, p.mask_sha256, p.mask_index_sha256,
       p.class_names, p.class_values, p.height, p.width
from image_mask_pairs p
"""


def _class_indices(mask: np.ndarray, names: Sequence[str], values: Sequence[int], want: Sequence[str],
                   what: str) -> np.ndarray:
    """Mask pixel values -> class indices in the order of ``want`` (class names of the spec)."""
    lookup = dict(zip(names, values))
    missing = [n for n in want if n not in lookup]
    if missing:
        raise ValueError(f"{what}: field class_names: expected the spec's classes {list(want)}, "
                         f"found {list(names)}")
    out = np.full(mask.shape, -1, np.int64)
    for i, name in enumerate(want):
        out[mask == lookup[name]] = i
    if (out < 0).any():
        bad = np.unique(mask[out < 0])[:5].tolist()
        raise ValueError(f"{what}: field mask values: expected only {[lookup[n] for n in want]}, found also {bad}")
    return out


class UNetEnsembleModule(TorchModelModule):
    """Model module of a U-net ensemble (EA or ER); ``params['spec']`` is the :class:`EnsembleSpec` dict.

    Training rows are (image, mask) pairs (``train_sql``); ``load_arrays`` reads
    each image's frame and its mask through the verified chunk reader and maps
    mask values to class indices by class name.  ``fit`` records the device and
    torch version it trained on in ``params['trained_on']``.
    """

    name: ClassVar[str] = "unet_ensemble"
    version: ClassVar[str] = "1"
    target: ClassVar[str] = "segmentation"
    unit: ClassVar[str] = ""
    subject_table: ClassVar[str] = "micrographs"
    train_sql: ClassVar[str] = TRAIN_SQL
    predict_sql: ClassVar[str] = "select record_id as subject_id from micrographs"

    @property
    def spec(self) -> EnsembleSpec:
        return EnsembleSpec.from_dict(self.params["spec"])

    def build_network(self):
        from matlake.models.imaging.ensemble import build_ensemble

        return build_ensemble(self.spec)

    def load_arrays(self, frame: pd.DataFrame, read: Any) -> pd.DataFrame:
        """``frame`` with columns ``image`` (2D array of the frame) and ``mask`` (class indices)."""
        spec = self.spec
        images, masks = [], []
        for row in frame.itertuples(index=False):
            with read(row.array_sha256, row.array_index_sha256) as arr:
                img = arr[int(row.frame_index)] if arr.ndim >= 3 else arr.read()
            with read(row.mask_sha256, row.mask_index_sha256) as marr:
                msk = marr.read()
            msk = msk[0] if msk.ndim == 3 else msk
            what = f"mask {row.mask_id} of image {row.subject_id}"
            if img.ndim != 2 or img.shape != msk.shape:
                raise ValueError(f"{what}: field shape: expected a 2D mask of the image's shape {img.shape}, found {msk.shape}")
            images.append(img)
            masks.append(_class_indices(msk, list(row.class_names), list(row.class_values), spec.class_names, what))
        out = frame.copy()
        out["image"] = images
        out["mask"] = masks
        return out

    def fit(self, frame: pd.DataFrame) -> tuple[Any, dict[str, float]]:
        from matlake.models.imaging.ensemble import train_ensemble

        if frame.empty:
            raise ValueError("no (image, mask) pairs in the training view")
        # the view's row order depends on how the catalog stored the rows; tiles are drawn by
        # image index, so a fixed order makes the weights depend only on the data and the seeds
        frame = frame.sort_values(["subject_id", "mask_id"], kind="stable").reset_index(drop=True)
        net, history = train_ensemble(list(frame["image"]), list(frame["mask"]), self.spec,
                                      device=self.params.get("device"))
        self.params["trained_on"] = {"device": history["device"], "torch": history["torch"]}
        metrics: dict[str, float] = {"n_images": float(len(frame)),
                                     "train_seconds": float(sum(m["seconds"] for m in history["members"]))}
        for i, m in enumerate(history["members"]):
            metrics[f"member{i}_final_loss"] = float(m["loss"][-1])
        return net, metrics

    def predict(self, artifact: Any, frame: pd.DataFrame) -> pd.DataFrame:
        raise NotImplementedError("segmentation maps are made by matlake.models.imaging.segment_lake.predict "
                                  "(matlake images predict MODEL)")


def train(lake: "Lake", spec: EnsembleSpec, view_sql: str | None = None, as_of: int | str | None = None,
          device: str | None = None) -> "ModelInfo":
    """Train the ensemble ``spec`` on the (image, mask) pairs of ``view_sql`` (default: all pairs)
    at snapshot ``as_of``; returns the model version.  ``view_sql`` must return the columns of
    :data:`TRAIN_SQL`.  When the spec keeps the default class names, those of the first mask are used."""
    from matlake.platform.modeling import read_view
    from matlake.platform.modeling import train as train_module

    if spec.class_names == EnsembleSpec.__dataclass_fields__["class_names"].default_factory():
        _, _, frame = read_view(lake, view_sql or TRAIN_SQL, as_of, producer=UNetEnsembleModule.name)
        if not frame.empty:
            spec = replace(spec, class_names=list(frame["class_names"].iloc[0]))
    params: dict[str, Any] = {"spec": spec.to_dict()}
    if device:
        params["device"] = device
    return train_module(lake, UNetEnsembleModule(**params), as_of=as_of, view_sql=view_sql)


# ----------------------------------------------------------------------------- prediction

def _uncertainty_maps(members: np.ndarray) -> dict[str, np.ndarray]:
    """The stored maps of member probabilities ``(M, C, h, w)``, from
    :func:`matlake.models.imaging.uncertainty.uncertainty_maps`: mean probability ``(C, h, w)``,
    predicted class, predictive entropy and mutual information (nats), and the member
    variance of the predicted class's probability."""
    from matlake.models.imaging.uncertainty import uncertainty_maps

    m = uncertainty_maps(members)
    return {"probability": m.mean.astype(np.float32), "class_map": m.predicted.astype(np.uint8),
            "entropy": m.entropy.astype(np.float32), "mutual_information": m.mutual_information.astype(np.float32),
            "member_variance": m.variance.astype(np.float32)}


def _maps_banded(members: np.memmap, tmp: Path, band: int) -> tuple[dict[str, np.memmap], dict[str, Any]]:
    """The uncertainty maps of a memory-mapped ``(M, C, H, W)`` stack, band of rows by band,
    into memory maps under ``tmp``; plus image-level sums."""
    m, c, h, w = members.shape
    shapes = {"probability": ((c, h, w), np.float32), "class_map": ((h, w), np.uint8),
              "entropy": ((h, w), np.float32), "mutual_information": ((h, w), np.float32),
              "member_variance": ((h, w), np.float32)}
    maps = {k: np.memmap(tmp / f"{k}.dat", dtype=dt, mode="w+", shape=s) for k, (s, dt) in shapes.items()}
    counts = np.zeros(c)
    member_counts = np.zeros((m, c))
    sums = {"entropy": 0.0, "mutual_information": 0.0, "member_variance": 0.0}
    for y0 in range(0, h, band):
        blk = np.asarray(members[:, :, y0:y0 + band])
        out = _uncertainty_maps(blk)
        for k, v in out.items():
            maps[k][..., y0:y0 + band, :] = v
        for k in sums:
            sums[k] += float(out[k].sum(dtype=np.float64))
        counts += np.bincount(out["class_map"].ravel(), minlength=c)[:c]
        am = blk.argmax(1)
        for i in range(m):
            member_counts[i] += np.bincount(am[i].ravel(), minlength=c)[:c]
    n = float(h * w)
    stats = {"class_fractions": (counts / n).tolist(),
             "class_fractions_std": (member_counts / n).std(0).tolist(),
             **{f"mean_{k}": v / n for k, v in sums.items()}}
    return maps, stats


def predict(lake: "Lake", model_id: str, image_ids: Sequence[str] | None = None, where: str | None = None,
            as_of: int | str | None = None, tile: int = 256, overlap: int = 64, batch_size: int = 4,
            device: str | None = None) -> dict[str, Any]:
    """Segment micrographs with model version ``model_id`` (id or ``name[:version]``).

    ``image_ids`` (micrographs record ids) or ``where`` (SQL condition on the
    ``micrographs`` row) choose the images, read at snapshot ``as_of``.  Each
    image is segmented by sliding-window inference (``tile``, ``overlap``,
    ``batch_size``; tiles are reduced to the image when it is smaller); its maps
    are stored as chunked objects and one ``segmentation_predictions`` row per
    image is committed, each by its own predict activity (used: the micrograph at its
    version and the model version; generated: the row and the map objects), all in one
    commit.  Returns ``{"snapshot", "activity_ids", "n", "record_ids"}``.
    """
    from sqlalchemy import select

    from matlake.models.imaging.ensemble import choose_device
    from matlake.models.imaging.sliding import sliding_window
    from matlake.platform import catalog as cat
    from matlake.platform.derivation import ActivitySpec, ObjectSpec, commit_activities
    from matlake.platform.modeling import load_model

    info, module, net = load_model(lake, model_id)  # the artifact's sha256 is checked before loading
    spec: EnsembleSpec = net.spec if hasattr(net, "spec") else module.spec
    sid = lake.resolve_snapshot(as_of)
    conds = []
    params: list[Any] = []
    if image_ids is not None:
        conds.append("record_id in (select unnest(?))")
        params.append(list(image_ids))
    if where:
        conds.append(f"({where})")
    sql = ("select record_id, version, height, width, frame_index, array_sha256, array_index_sha256 from micrographs"
           + (" where " + " and ".join(conds) if conds else "") + " order by record_id")
    rows = lake.sql(sql, as_of=sid, params=params or None).arrow().to_pylist()
    if image_ids is not None:
        missing = sorted(set(image_ids) - {r["record_id"] for r in rows})
        if missing:
            raise ValueError(f"no micrographs record {missing[0]!r} at snapshot {sid}")
    if not rows:
        return {"snapshot": None, "activity_ids": [], "n": 0, "record_ids": []}
    device = choose_device(device)
    mult = 2 ** (spec.depth - 1)
    out_rows, objects, acts = [], [], []
    for r in rows:
        started = cat.utcnow()
        h, w = int(r["height"]), int(r["width"])
        t = min(tile, -(-max(h, w) // mult) * mult)
        ov = min(overlap, t // 2)
        ov = t - -(-(t - ov) // mult) * mult  # the stride must stay on the pooling grid
        with lake.chunked(r["array_sha256"], r["array_index_sha256"]) as arr, \
                tempfile.TemporaryDirectory(prefix="matlake-seg-") as tmpdir:
            if arr.ndim not in (2, 3) or spec.in_channels != 1:
                raise ValueError(f"micrograph {r['record_id']}: field array_shape: expected grey frames "
                                 f"(n_frames, height, width) for a 1-channel model, found {list(arr.shape)}")
            frame = int(r["frame_index"]) if arr.ndim == 3 else None
            tmp = Path(tmpdir)
            probs = np.memmap(tmp / "members.dat", dtype=np.float32, mode="w+",
                              shape=(len(spec.members), spec.n_classes, h, w))
            sliding_window(net, arr, probs, tile=t, overlap=ov, batch_size=batch_size, members=True,
                           frame=frame, device=device)
            maps, stats = _maps_banded(probs, tmp, band=max(1, (1 << 20) // max(1, w)))
            refs = {}
            for k, v in maps.items():
                v.flush()
                chunks = (spec.n_classes, min(h, 512), min(w, 512)) if v.ndim == 3 else (min(h, 512), min(w, 512))
                refs[k] = lake.put_chunked(v, chunks=chunks)
            del maps, probs
        for k, ref in refs.items():
            objects.append(ObjectSpec.stored(ref, media_type=ref.media_type, name=f"{r['record_id']}-{k}"))
        unc = stats["mean_mutual_information"]
        row = {"record_id": derived_record_id(PREDICT_NAME, r["record_id"], info.model_id),
               "image_id": r["record_id"], "image_version": int(r["version"]), "model_id": info.model_id,
               "model_name": info.name, "model_version": int(info.version), "ensemble_kind": spec.kind,
               "n_members": len(spec.members), "height": h, "width": w, "class_names": list(spec.class_names),
               "class_fractions": stats["class_fractions"], "class_fractions_std": stats["class_fractions_std"],
               "uncertainty_score": float(unc) if math.isfinite(unc) else None,
               "mean_entropy": stats["mean_entropy"], "mean_mutual_information": unc,
               "mean_member_variance": stats["mean_member_variance"],
               "inference_json": json.dumps({"tile": t, "overlap": ov, "margin": ov // 4, "batch_size": batch_size,
                                             "device": device, "blend": "sin^2 ramp, margin zero"}, sort_keys=True)}
        for k, ref in refs.items():
            row[f"{k}_sha256"] = ref.sha256
            row[f"{k}_index_sha256"] = ref.index_sha256
        out_rows.append(row)
        # one activity per image, so that the maps of an image derive from that image only
        acts.append(ActivitySpec(
            name=PREDICT_NAME, version=PREDICT_VERSION, started_at=started,
            parameters={"model_id": info.model_id, "snapshot_id": sid, "selection_sql": sql,
                        "image_id": r["record_id"], "tile": t, "overlap": ov, "batch_size": batch_size,
                        "device": device},
            used={("micrographs", r["record_id"]): int(r["version"])}, used_entities=[("model", info.model_id)],
            generated_entities=[("object", ref.sha256) for ref in refs.values()],
            rows={"segmentation_predictions": [row]}))
    snap = commit_activities(lake, kind="predict", message=f"segment {len(out_rows)} micrographs with "
                             f"{info.name} v{info.version}", activities=acts, objects=objects)
    with lake.engine.connect() as conn:
        aids = conn.execute(select(cat.Activity.activity_id).where(cat.Activity.snapshot_id == snap,
                                                                   cat.Activity.name == PREDICT_NAME)).scalars().all()
    return {"snapshot": snap, "activity_ids": sorted(aids), "n": len(out_rows),
            "record_ids": [r["record_id"] for r in out_rows]}


class EnsemblePredictor:
    """A stored U-net ensemble as a *member predictor* of
    :func:`matlake.models.imaging.evaluate_lake.evaluate`: ``frames (b, H, W) -> (M, C, b, H, W)``
    member probabilities by sliding-window inference, with ``name``, ``version``,
    ``parameters`` and ``model_id``.

    ``lake`` is a ``Lake`` or its path; ``model`` a model id or ``name[:version]``.
    :func:`~matlake.models.imaging.evaluate_lake.evaluate` builds one for every model id it
    is given (``matlake images evaluate --model ID_OR_NAME``).  The artifact is
    hash-checked when loaded.
    """

    def __init__(self, lake: Any, model: str, tile: int = 256, overlap: int = 64, batch_size: int = 4,
                 device: str | None = None) -> None:
        from matlake.platform.modeling import load_model

        if isinstance(lake, (str, Path)):
            from matlake.platform.lake import Lake

            lake = Lake.open(lake)
        info, _, self.net = load_model(lake, model)
        self.model_id = info.model_id
        self.name = f"{info.name}:v{info.version}"
        self.version = info.module_version
        self.tile, self.overlap, self.batch_size, self.device = tile, overlap, batch_size, device
        self.parameters = {"model_id": info.model_id, "tile": tile, "overlap": overlap}

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        from matlake.models.imaging.sliding import sliding_window

        frames = np.asarray(frames)
        spec: EnsembleSpec = self.net.spec
        b, h, w = frames.shape
        mult = 2 ** (spec.depth - 1)
        t = min(self.tile, -(-max(h, w) // mult) * mult)
        ov = min(self.overlap, t // 2)
        ov = t - -(-(t - ov) // mult) * mult
        out = np.zeros((len(spec.members), spec.n_classes, b, h, w), np.float32)
        for i in range(b):
            sliding_window(self.net, frames[i], out[:, :, i], tile=t, overlap=ov, batch_size=self.batch_size,
                           members=True, device=self.device)
        return out
