"""Spectrum features in the lake: featurizers, PCA as a model version, similarity search.

Platform side of :mod:`matlake.models.spectra.features` (the pure math).

**Featurizers** (:class:`SpectrumFeaturizer`, :class:`PcaFeaturizer`) follow the
:class:`~matlake.models.base.Featurizer` contract and run through
:func:`matlake.platform.modeling.featurize`: one ``featurize`` activity per run
*used* every subject at its version and generated one ``spectrum_features`` row
per subject; a subject that fails (a spectrum that does not cover the grid, a
negative intensity for a CDF) is reported and the others are committed;
re-running with the same featurizer version and parameters adds nothing.

The math is batched, not done once per spectrum: :func:`featurize_spectra` reads
the featurizer's input view at the snapshot as Arrow, computes the whole matrix
with one call of :func:`~matlake.models.spectra.features.feature_matrix` (per
intensity unit) and keeps the vectors by (subject, version); ``featurize_one``
then only looks its row up (a row it has not seen is computed alone, with the
same code).  On 10^4 spectra, calling ``feature_matrix`` once per spectrum took
1.1 s of a 2.1 s featurize run; once for all of them, 0.02 s.  The commit goes
through the platform's ``featurize`` so that skipping, per-subject errors and
the activity are the same as for every other featurizer.

Subjects:

- ``spectra_processed`` rows on a named grid (the normal path; the processing
  step interpolated them).  The row's axis must equal the grid's points.
- ``spectra`` rows, interpolated onto ``grid`` with
  :func:`~matlake.models.spectra.processing.interpolate_to_grid`; a spectrum
  that does not cover the grid fails with the shortfall in eV.
- for PCA scores, the ``spectrum_features`` vectors the PCA model was fitted
  on (so the row's lineage passes through that vector to the spectrum).

Record ids: ``derived_record_id(featurizer, subject, grid)`` (for PCA the key is
the model id), so a new featurizer version or other parameters add versions of
the same record; PCA scores of another model are other records.

**PCA** (:class:`SpectrumPCA`) is a :class:`~matlake.models.base.ModelModule`
trained by :func:`matlake.platform.modeling.train` on stored feature vectors
(one featurizer, version, parameter set and grid), so the model version records
the view SQL and snapshot; its artifact is a skops file of a scikit-learn PCA
and its metrics the explained variance ratios.  ``predict`` gives each vector's
reconstruction RMSE (how far it lies from the PCA subspace, in the feature's
unit), a usable outlier score.

**Similarity** (:func:`similar`) ranks stored vectors against one spectrum's
vector inside DuckDB (``list_cosine_similarity`` / ``list_distance``) at one
snapshot, among vectors made the same way (featurizer, version, parameters,
grid).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from matlake.models.base import Featurizer, ModelModule, derived_record_id
from matlake.models.spectra.features import FEATURE_KINDS, feature_matrix, kind_parameters
from matlake.models.spectra.grids import BUILTIN_GRIDS, Grid, resolve_grid
from matlake.models.spectra.processing import interpolate_to_grid

if TYPE_CHECKING:
    import pyarrow as pa

    from matlake.platform.lake import Lake
    from matlake.platform.modeling import FeaturizeReport, ModelInfo

__all__ = ["FEATURES_VERSION", "PCA_FEATURIZER_VERSION", "SOURCES", "SpectrumFeaturizer", "PcaFeaturizer",
           "SpectrumPCA", "featurize_spectra", "featurize_pca", "fit_pca", "similar"]

FEATURES_VERSION = "1"  # bump when a kind's science changes (features.py), so re-runs add versions
PCA_FEATURIZER_VERSION = "1"
_PCA_INPUT = "subject_id, subject_version, spectrum_id, grid_name, vector, unit"  # what PCA scores need
SOURCES = ("processed", "spectra")
METRICS = ("cosine", "l2")

# Intensity quantities of processed spectra that are dimensionless whatever the raw unit was.
_DIMENSIONLESS_MARKS = ("normalized", "normalised", "flattened")


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _literal(value: str) -> str:
    """``value`` as an SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def _intensity_unit(raw_unit: Any, quantity: Any) -> str:
    """The unit of an intensity for the feature's unit string ('' when dimensionless)."""
    q = str(quantity or "").lower()
    if any(m in q for m in _DIMENSIONLESS_MARKS):
        return ""
    unit = str(raw_unit or "")
    return "" if unit in ("mu", "1", "dimensionless") else unit


# ----------------------------------------------------------------------------- featurizers


class _BatchedFeaturizer(Featurizer):
    """A featurizer whose math runs on many rows at once (:meth:`prime`); ``featurize_one``
    returns the primed result of its row, or computes the row alone when it was not primed.

    Results are kept by (subject_id, subject_version): a record version never changes,
    so a primed result is what computing the row alone gives (to rounding).
    """

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._done: dict[tuple[str, int], dict[str, Any] | Exception] = {}

    def prime(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Compute the results of ``rows`` (input-view rows) together."""
        self._done.update(self._compute(rows))

    def featurize_one(self, row: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        key = (str(row["subject_id"]), int(row["subject_version"]))
        if key not in self._done:
            self._done.update(self._compute([row]))
        result = self._done[key]
        if isinstance(result, Exception):
            raise result
        return {"spectrum_features": [result]}

    def _compute(self, rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], dict[str, Any] | Exception]:
        raise NotImplementedError  # each subclass is one way of computing vectors

    def _row(self, src: Mapping[str, Any], key: str, grid_name: str | None, vector: np.ndarray,
             names: list[str] | None, unit: str, params_json: str) -> dict[str, Any]:
        subject = str(src["subject_id"])
        return {
            "record_id": derived_record_id(self.name, subject, key), "subject_id": subject,
            "subject_table": self.subject_table, "subject_version": int(src["subject_version"]),
            "spectrum_id": str(src["spectrum_id"]), "featurizer": self.name, "featurizer_version": self.version,
            # a float64 numpy row, not a list: Arrow takes it 2.5x faster and no Python float is made
            "params_json": params_json, "grid_name": grid_name, "vector": np.ascontiguousarray(vector, dtype=float),
            "n_features": int(vector.shape[0]), "feature_names": names, "unit": unit,
        }


def _first_error(kind: str, grid: np.ndarray, y: np.ndarray, kind_params: Mapping[str, Any]) -> Exception:
    """The error of one spectrum alone, worded without the batch index."""
    try:
        feature_matrix(kind, grid, y[None, :], **kind_params)
    except ValueError as exc:
        return ValueError(str(exc).removeprefix("spectrum 0: "))
    return ValueError(f"{kind}: failed in a batch but not alone")  # pragma: no cover - a bug if reached


class SpectrumFeaturizer(_BatchedFeaturizer):
    """One feature kind of :mod:`~matlake.models.spectra.features` for each spectrum.

    Parameters
    ----------
    feature: one of :data:`~matlake.models.spectra.features.FEATURE_KINDS`.
    grid: the named grid (eV or nm); a :class:`Grid` or a built-in grid's name.
    source: ``"processed"`` (``spectra_processed`` rows on ``grid``) or
        ``"spectra"`` (raw rows, interpolated onto ``grid``).
    kind_params: the kind's parameters (e.g. ``window=5.0`` for ``cubic``).
    where: SQL condition selecting the subjects, on subject_id, spectrum_id,
        technique, element, edge, sample, source_kind (processed: also pipeline,
        intensity_quantity).
        It shapes ``input_sql`` and is not a parameter of the vectors, so a
        subject featurized before under another ``where`` is not done again.

    ``input_sql`` returns only what the vectors need: the intensity (and, for
    raw spectra, the axis), units, and for processed rows ``axis_offset``, the
    Euclidean distance in DuckDB between the row's axis and the grid's points
    (null when the lengths differ), so processed axes never reach Python.
    """

    version = FEATURES_VERSION

    def __init__(self, feature: str, grid: Grid | str, source: str = "processed",
                 kind_params: Mapping[str, Any] | None = None, where: str | None = None) -> None:
        if feature not in FEATURE_KINDS:
            raise ValueError(f"feature: expected one of {', '.join(FEATURE_KINDS)} (or pca with a model), "
                             f"found {feature!r}")
        if source not in SOURCES:
            raise ValueError(f"source: expected one of {', '.join(SOURCES)}, found {source!r}")
        grid = grid if isinstance(grid, Grid) else resolve_grid(grid)
        full = kind_parameters(feature, **dict(kind_params or {}))  # refuses unknown parameters now
        # the points' digest too: a user grid redefined under the same name must not count as done
        digest = hashlib.sha256(np.asarray(grid.points, dtype=float).tobytes()).hexdigest()[:16]
        super().__init__(feature=feature, grid=grid.name, grid_sha256=digest, source=source, kind_params=full)
        self.name = feature
        self.grid = grid
        self.kind_params = full
        self.where = where
        self.params_json = _canonical_json(full)
        self.subject_table = "spectra_processed" if source == "processed" else "spectra"

    @property
    def input_sql(self) -> str:  # type: ignore[override]
        g = self.grid
        if self.params["source"] == "processed":
            points = "[" + ", ".join(repr(float(x)) for x in g.points) + "]::double[]"
            wide = ("select p.record_id as subject_id, p.version as subject_version, p.subject_id as spectrum_id, "
                    "p.pipeline, p.axis_unit, p.intensity, p.intensity_quantity, s.intensity_unit, s.technique, "
                    "s.element, s.edge, s.sample, s.source_kind, len(p.axis) as axis_points, "
                    f"case when len(p.axis) = {len(g)} then list_distance(p.axis, {points}) end as axis_offset "
                    "from spectra_processed p left join spectra s on s.record_id = p.subject_id "
                    f"where p.grid_name = {_literal(g.name)}")
            needed = ("subject_id, subject_version, spectrum_id, axis_unit, intensity, intensity_quantity, "
                      "intensity_unit, axis_points, axis_offset")
        else:
            wide = ("select record_id as subject_id, version as subject_version, record_id as spectrum_id, axis, "
                    "axis_unit, intensity, intensity_quantity, intensity_unit, technique, element, edge, sample, "
                    "source_kind from spectra")
            needed = ("subject_id, subject_version, spectrum_id, axis, axis_unit, intensity, intensity_quantity, "
                      "intensity_unit")
        return f"select {needed} from ({wide})" + (f" where {self.where}" if self.where else "")

    def _on_grid(self, row: Mapping[str, Any]) -> np.ndarray:
        """The row's intensity on the grid; raises ValueError naming the row and what is wrong."""
        grid = self.grid
        what = f"{self.subject_table} {row['subject_id']}"
        if row.get("intensity") is None:
            raise ValueError(f"{what}: intensity: expected {len(grid)} values, found none")
        y = np.asarray(row["intensity"], dtype=float)
        unit = row.get("axis_unit") or grid.unit
        if unit != grid.unit:
            raise ValueError(f"{what}: axis_unit: expected {grid.unit} (the unit of grid {grid.name}), found {unit}")
        if self.params["source"] == "processed":
            g = grid.array
            offset = row.get("axis_offset")
            if offset is None or not np.isfinite(offset) or y.size != len(g):  # null arrives as None or NaN
                raise ValueError(f"{what}: axis: expected the {len(g)} points of grid {grid.name}, found "
                                 f"{row.get('axis_points')} axis points and {y.size} intensities")
            if not offset <= 1e-6:  # the Euclidean distance bounds every point's deviation
                raise ValueError(f"{what}: axis: expected the points of grid {grid.name} ({g[0]:.6g}-{g[-1]:.6g} "
                                 f"{grid.unit}), found points {offset / np.sqrt(len(g)):.4g} {grid.unit} (RMS) "
                                 "away from them")
            return y
        axis = np.asarray(row["axis"], dtype=float) if row.get("axis") is not None else np.empty(0)
        if axis.shape != y.shape:
            raise ValueError(f"{what}: expected axis and intensity of equal length, found {axis.size} and {y.size}")
        try:
            return interpolate_to_grid(axis, y, grid)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None

    def _compute(self, rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], dict[str, Any] | Exception]:
        out: dict[tuple[str, int], dict[str, Any] | Exception] = {}
        groups: dict[str, list[tuple[Mapping[str, Any], np.ndarray]]] = {}  # by intensity unit
        for row in rows:
            try:
                y = self._on_grid(row)
            except ValueError as exc:
                out[(str(row["subject_id"]), int(row["subject_version"]))] = exc
                continue
            unit = _intensity_unit(row.get("intensity_unit"), row.get("intensity_quantity"))
            groups.setdefault(unit, []).append((row, y))
        kind, grid = self.params["feature"], self.grid
        for unit, members in groups.items():
            Y = np.stack([y for _, y in members])
            try:
                X, names, vunit = feature_matrix(kind, grid.array, Y, intensity_unit=unit, axis_unit=grid.unit,
                                                 **self.kind_params)
            except ValueError:
                # Some spectrum is unusable: compute them one by one so only the bad ones fail.
                X, names, vunit = None, None, ""
            for i, (row, y) in enumerate(members):
                key = (str(row["subject_id"]), int(row["subject_version"]))
                if X is None:
                    try:
                        x1, names, vunit = feature_matrix(kind, grid.array, y[None, :], intensity_unit=unit,
                                                          axis_unit=grid.unit, **self.kind_params)
                    except ValueError:
                        err = _first_error(kind, grid.array, y, self.kind_params)
                        out[key] = ValueError(f"{self.subject_table} {row['subject_id']}: {err}")
                        continue
                    vec = x1[0]
                else:
                    vec = X[i]
                out[key] = self._row(row, grid.name, grid.name, vec, names, vunit, self.params_json)
        return out


class PcaFeaturizer(_BatchedFeaturizer):
    """PCA scores of stored feature vectors with a fitted :class:`SpectrumPCA` model version.

    Subjects are the ``spectrum_features`` rows the model's kind of vector is
    stored in (same featurizer, version, parameters and grid as its training
    data); each gets one ``pca`` vector (``pc1``, ``pc2``, ... in the unit of
    the input vector) keyed by the model id.  ``used_entities`` names the model,
    for the platform to record as *used* by the activity.
    """

    name = "pca"
    version = PCA_FEATURIZER_VERSION
    subject_table = "spectrum_features"

    def __init__(self, model_id: str, model_params: Mapping[str, Any], mean: np.ndarray,
                 components: np.ndarray, where: str | None = None) -> None:
        super().__init__(model_id=model_id)
        self.model_params = dict(model_params)
        self.where = where
        self.mean = np.asarray(mean, dtype=float)
        self.components = np.asarray(components, dtype=float)
        self.used_entities = (("model", model_id),)
        self.params_json = _canonical_json({"model_id": model_id, "n_components": int(self.components.shape[0])})

    @property
    def input_sql(self) -> str:  # type: ignore[override]
        return SpectrumPCA(**self.model_params).vector_sql(_PCA_INPUT, self.where)

    def _compute(self, rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], dict[str, Any] | Exception]:
        out: dict[tuple[str, int], dict[str, Any] | Exception] = {}
        good: list[tuple[Mapping[str, Any], np.ndarray]] = []
        width = self.mean.shape[0]
        for row in rows:
            key = (str(row["subject_id"]), int(row["subject_version"]))
            x = np.asarray(row["vector"], dtype=float)
            if x.shape != (width,) or not np.isfinite(x).all():
                out[key] = ValueError(f"spectrum_features {row['subject_id']}: vector: expected {width} finite "
                                      f"values (the model's input), found {x.size} values")
                continue
            good.append((row, x))
        if good:
            scores = (np.stack([x for _, x in good]) - self.mean) @ self.components.T
            names = [f"pc{k + 1}" for k in range(self.components.shape[0])]
            for (row, _), s in zip(good, scores):
                key = (str(row["subject_id"]), int(row["subject_version"]))
                out[key] = self._row(row, self.params["model_id"], row.get("grid_name"), s, names,
                                     str(row.get("unit") or ""), self.params_json)
        return out


# ----------------------------------------------------------------------------- PCA model module


class SpectrumPCA(ModelModule):
    """PCA of stored spectrum feature vectors (scikit-learn).

    The solver is ``covariance_eigh``: the eigen-decomposition of the n_features x
    n_features covariance matrix, exact (no random projections), deterministic, and
    for 10^5 spectra x 100 grid points ~10x faster than a full SVD of the data.

    Parameters: ``feature`` (a kind of :data:`FEATURE_KINDS`), ``grid`` (grid name),
    ``n_components``, ``feature_params`` (the kind's parameters the vectors were made
    with; defaults when omitted), ``feature_version`` (featurizer version of the
    vectors), ``where`` (an SQL condition on the training rows: spectrum_id,
    technique, element, edge, sample, source_kind, subject_table, and for processed
    subjects pipeline and intensity_quantity, e.g. ``intensity_quantity = 'normalized mu'``).

    The model name is ``pca-<feature>-<grid>``, so ``matlake spectra featurize
    --feature pca --model pca-cdf-xanes-ni-k`` takes its latest version.
    """

    version = "1"
    target = "reconstruction_rmse"
    subject_table = "spectrum_features"

    def __init__(self, feature: str, grid: str, n_components: int = 10,
                 feature_params: Mapping[str, Any] | None = None, feature_version: str = FEATURES_VERSION,
                 where: str | None = None) -> None:
        if feature not in FEATURE_KINDS:
            raise ValueError(f"feature: expected one of {', '.join(FEATURE_KINDS)}, found {feature!r}")
        if int(n_components) < 1:
            raise ValueError(f"n_components: expected at least 1, found {n_components}")
        full = kind_parameters(feature, **dict(feature_params or {}))
        super().__init__(feature=feature, grid=grid, n_components=int(n_components), feature_params=full,
                         feature_version=str(feature_version), where=where)
        self.name = f"pca-{feature}-{grid}"

    def vector_sql(self, columns: str, where: str | None) -> str:
        """``columns`` of the stored vectors of this model's kind (``subject_id`` is the feature
        record's id), filtered by ``where`` on spectrum_id, subject_table, technique, element,
        edge, sample, source_kind, pipeline, intensity_quantity."""
        p = self.params
        wide = ("select f.record_id as subject_id, f.version as subject_version, f.spectrum_id, f.subject_table, "
                "f.grid_name, f.vector, f.n_features, f.unit, s.technique, s.element, s.edge, s.sample, "
                "s.source_kind, p.pipeline, p.intensity_quantity from spectrum_features f "
                "left join spectra s on s.record_id = f.spectrum_id left join spectra_processed p "
                "on f.subject_table = 'spectra_processed' and p.record_id = f.subject_id "
                f"where f.featurizer = {_literal(p['feature'])} and f.grid_name = {_literal(p['grid'])} "
                f"and f.featurizer_version = {_literal(p['feature_version'])} "
                f"and f.params_json = {_literal(_canonical_json(p['feature_params']))}")
        return f"select {columns} from ({wide})" + (f" where {where}" if where else "") + " order by subject_id"

    @property
    def train_sql(self) -> str:  # type: ignore[override]
        return self.vector_sql("subject_id, vector, n_features", self.params["where"])

    @property
    def predict_sql(self) -> str:  # type: ignore[override]
        return self.vector_sql("subject_id, vector, n_features", None)

    def _matrix(self, frame: pd.DataFrame) -> np.ndarray:
        if frame.empty:
            p = self.params
            raise ValueError(f"{self.name}: no {p['feature']} vectors on grid {p['grid']} with parameters "
                             f"{_canonical_json(p['feature_params'])} (featurizer version {p['feature_version']}); "
                             f"run matlake spectra featurize --feature {p['feature']} --grid {p['grid']} first")
        widths = set(int(n) for n in frame["n_features"])
        if len(widths) != 1:
            raise ValueError(f"{self.name}: expected vectors of one length, found lengths {sorted(widths)}")
        return np.stack([np.asarray(v, dtype=float) for v in frame["vector"]])

    def fit(self, frame: pd.DataFrame) -> tuple[Any, dict[str, float]]:
        from sklearn.decomposition import PCA

        X = self._matrix(frame)
        n = self.params["n_components"]
        if n > min(X.shape):
            raise ValueError(f"{self.name}: n_components: expected at most {min(X.shape)} "
                             f"({X.shape[0]} vectors of {X.shape[1]} features), found {n}")
        pca = PCA(n_components=n, svd_solver="covariance_eigh").fit(X)
        metrics = {f"explained_variance_ratio_{k + 1}": float(r) for k, r in enumerate(pca.explained_variance_ratio_)}
        metrics["explained_variance_ratio_total"] = float(np.sum(pca.explained_variance_ratio_))
        return pca, metrics

    def predict(self, artifact: Any, frame: pd.DataFrame) -> pd.DataFrame:
        """Reconstruction RMSE of each vector from the first ``n_components`` components."""
        X = self._matrix(frame)
        back = artifact.inverse_transform(artifact.transform(X))
        rmse = np.sqrt(np.mean((X - back) ** 2, axis=1))
        return pd.DataFrame({"subject_id": frame["subject_id"].astype(str).to_numpy(), "value": rmse,
                             "uncertainty": np.nan})


# ----------------------------------------------------------------------------- platform functions


def _arrow_rows(table: "pa.Table") -> list[dict[str, Any]]:
    """Rows of an Arrow table as dicts; list<double> cells become numpy views of one flat array
    (no per-element Python objects), other cells Python values."""
    import pyarrow as pa

    columns = []
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if pa.types.is_list(col.type) and pa.types.is_floating(col.type.value_type):
            flat = col.flatten().to_numpy(zero_copy_only=False).astype(float, copy=False)
            offsets = col.offsets.to_numpy()
            offsets = offsets - offsets[0]
            valid = col.is_valid().to_numpy(zero_copy_only=False)
            columns.append([flat[a:b] if ok else None for a, b, ok in zip(offsets[:-1], offsets[1:], valid)])
        else:
            columns.append(col.to_pylist())
    names = table.column_names
    return [dict(zip(names, values)) for values in zip(*columns)]


def _primed_featurize(lake: "Lake", featurizer: _BatchedFeaturizer, as_of: int | str | None, force: bool,
                      progress: bool) -> "FeaturizeReport":
    """Compute every subject's vector in one batch, then commit through the platform's featurize.

    The batch reads the featurizer's input view at the same snapshot as
    :func:`~matlake.platform.modeling.featurize` will, as Arrow.
    """
    from matlake.platform.modeling import featurize

    sid = lake.resolve_snapshot(as_of)
    featurizer.prime(_arrow_rows(lake.sql(featurizer.input_sql, as_of=sid).arrow()))
    return featurize(lake, featurizer, as_of=sid, force=force, progress=progress)


def featurize_spectra(lake: "Lake", feature: str, grid: str, source: str = "processed", *,
                      where: str | None = None, as_of: int | str | None = None, force: bool = False,
                      progress: bool = False, **kind_params: Any) -> "FeaturizeReport":
    """Write ``feature`` vectors on ``grid`` of the spectra at ``as_of`` to ``spectrum_features``.

    ``grid``: a built-in grid or a ``spectral_grids`` record's name (resolved at
    ``as_of``; a user grid is linked as used).  ``source``: ``processed``
    (``spectra_processed`` rows on the grid) or ``spectra`` (raw rows interpolated onto
    it).  ``where``: an SQL condition on subject_id, spectrum_id, technique, element,
    edge, sample, source_kind (processed: also pipeline, intensity_quantity).  ``kind_params``: the kind's parameters.  Subjects already featurized
    by this version with these parameters are skipped unless ``force``.  Returns the
    platform's report (snapshot, activity, rows, per-subject errors, skipped).
    """
    from matlake.models.spectra.processing import user_grid_rows

    sid = lake.resolve_snapshot(as_of)
    user_grids = [] if grid in BUILTIN_GRIDS else user_grid_rows(lake, sid)
    featurizer = SpectrumFeaturizer(feature, resolve_grid(grid, user_grids), source, kind_params, where=where)
    # a user grid is an input too: linked as a used record (the platform's extra_used)
    featurizer.extra_used = [("spectral_grids", str(r["record_id"]), int(r["version"]))
                             for r in user_grids if r["name"] == grid]
    return _primed_featurize(lake, featurizer, sid, force, progress)


def _pca_parts(lake: "Lake", model: str) -> tuple["ModelInfo", dict[str, Any], np.ndarray, np.ndarray]:
    from matlake.platform.lake import LakeError
    from matlake.platform.modeling import load_model

    info, module, artifact = load_model(lake, model)
    if not isinstance(module, SpectrumPCA):
        raise LakeError(f"model {info.name} v{info.version} ({info.model_id}) is a {info.module}, "
                        f"not a {SpectrumPCA.qualified_name()}: --feature pca needs a PCA model")
    return info, module.params, np.asarray(artifact.mean_), np.asarray(artifact.components_)


def featurize_pca(lake: "Lake", model: str, *, where: str | None = None, as_of: int | str | None = None,
                  force: bool = False, progress: bool = False) -> "FeaturizeReport":
    """Write PCA score vectors (featurizer ``pca``) of every stored vector of the model's kind.

    ``model`` is a model id, a model name (latest version) or ``name:version``.
    """
    info, params, mean, components = _pca_parts(lake, model)
    featurizer = PcaFeaturizer(info.model_id, params, mean, components, where=where)
    return _primed_featurize(lake, featurizer, as_of, force, progress)


def fit_pca(lake: "Lake", feature: str, grid: str, n_components: int = 10, *, where: str | None = None,
            as_of: int | str | None = None, feature_params: Mapping[str, Any] | None = None) -> "ModelInfo":
    """Fit a PCA on the stored ``feature`` vectors on ``grid`` at ``as_of`` and register it as a model version."""
    from matlake.platform.modeling import train

    module = SpectrumPCA(feature, grid, n_components, feature_params=feature_params, where=where)
    return train(lake, module, as_of=as_of)


# ----------------------------------------------------------------------------- similarity


def similar(lake: "Lake", spectrum: str, k: int = 10, feature: str = "cdf", metric: str = "cosine", *,
            grid: str | None = None, model: str | None = None, where: str | None = None,
            as_of: int | str | None = None) -> pd.DataFrame:
    """The ``k`` stored spectra nearest to ``spectrum`` by their ``feature`` vectors, at ``as_of``.

    ``spectrum``: a spectrum's record id (or the id of its processed row or feature
    row, or a unique prefix of 8+ characters).  Candidates are the vectors made the
    same way as the query's (featurizer, version, parameters, grid); the query
    spectrum itself is left out and each spectrum counts once (its nearest vector).
    ``metric``: ``cosine`` (distance 1 - cosine similarity, dimensionless) or ``l2``
    (Euclidean distance, in the vector's unit).  ``where``: an SQL condition on the
    candidates' columns spectrum_id, subject_id, subject_table, technique, element,
    edge, sample, source_kind, pipeline, intensity_quantity (the last two for
    processed subjects).  ``model`` (for ``feature='pca'``) picks the PCA model's
    vectors.  The distances are computed by DuckDB.

    Returns a DataFrame with rank, spectrum_id, distance, technique, element, sample,
    subject_id.  Raises ``LakeError`` for an unknown id, a spectrum without that
    feature, or an ambiguous query vector (with what tells them apart).
    """
    from matlake.platform.lake import LakeError

    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {', '.join(METRICS)}, found {metric!r}")
    if int(k) < 1:
        raise ValueError(f"k: expected at least 1, found {k}")
    sid = lake.resolve_snapshot(as_of)
    ident = spectrum.strip()
    # a source file name names its spectrum when it holds exactly one (as `matlake spectra plot` accepts)
    by_name = lake.sql("select record_id from spectra where source_name = ?", as_of=sid, params=[ident]).fetchall()
    if len(by_name) == 1:
        ident = by_name[0][0]
    elif len(by_name) > 1:
        raise LakeError(f"spectrum {spectrum!r}: the file holds {len(by_name)} spectra; name one by its record id "
                        f"(e.g. {by_name[0][0]})")
    if len(ident) < 8:
        raise LakeError(f"spectrum id {spectrum!r}: expected a record id or a prefix of at least 8 characters")
    exact = "f.spectrum_id = $1 or f.subject_id = $1 or f.record_id = $1"
    prefix = "starts_with(f.spectrum_id, $1) or starts_with(f.subject_id, $1) or starts_with(f.record_id, $1)"
    cond = f"f.featurizer = {_literal(feature)}"
    if grid:
        cond += f" and f.grid_name = {_literal(grid)}"
    if model:
        if feature != "pca":
            raise ValueError(f"model: only for feature 'pca', found feature {feature!r}")
        from matlake.platform.modeling import model_info

        cond += f" and json_extract_string(f.params_json, '$.model_id') = {_literal(model_info(lake, model).model_id)}"
    base = ("select f.record_id, f.spectrum_id, f.subject_id, f.subject_table, f.grid_name, f.featurizer_version, "
            "f.params_json, p.pipeline, p.intensity_quantity, f.vector from spectrum_features f "
            "left join spectra_processed p on f.subject_table = 'spectra_processed' and p.record_id = f.subject_id "
            "where ({m}) and " + cond + " order by f.subject_table, f.subject_id")
    hits = lake.sql(base.format(m=exact), as_of=sid, params=[ident]).fetchall()
    if not hits:
        hits = lake.sql(base.format(m=prefix), as_of=sid, params=[ident]).fetchall()
    if not hits:
        known = lake.sql("select 1 from spectra where starts_with(record_id, $1) union all "
                         "select 1 from spectra_processed where starts_with(record_id, $1) union all "
                         "select 1 from spectrum_features where starts_with(record_id, $1) limit 1",
                         as_of=sid, params=[ident]).fetchone()
        if known is None:
            raise LakeError(f"no spectrum, processed spectrum or feature vector with id {spectrum!r} "
                            f"at snapshot {sid}")
        have = lake.sql("select distinct featurizer, grid_name from spectrum_features f where " + f"({prefix})"
                        " order by all", as_of=sid, params=[ident]).fetchall()
        listed = ", ".join(f"{f} on {g}" for f, g in have) or "none"
        raise LakeError(f"spectrum {spectrum}: no {feature} vector{' on grid ' + grid if grid else ''} at snapshot "
                        f"{sid} (its features: {listed}); run matlake spectra featurize --feature {feature} first")
    if len(hits) > 1:
        ways = "; ".join(f"{h[3]} {h[2]} on {h[4]}" + (f" ({h[7]}, {h[8]})" if h[7] else f" ({h[6]})")
                         for h in hits[:6])
        raise LakeError(f"spectrum {spectrum}: {len(hits)} {feature} vectors match ({ways}); give the subject id "
                        "of one, or --grid / --model")
    (query_record, query_spectrum, _, query_table, query_grid, query_version, query_params, query_pipeline,
     query_quantity, vector) = hits[0]
    if metric == "cosine":
        dist = "1 - list_cosine_similarity(f.vector, $1::double[])"
    else:
        dist = "list_distance(f.vector, $1::double[])"
    # Comparable vectors: made the same way, from the same kind of subject (for processed
    # spectra, the same pipeline output, e.g. 'normalized mu' never against 'flattened mu').
    # Distances come first; the spectra table is joined only to filter by `where` and, at
    # the end, for the k rows shown.  A spectrum with several comparable vectors counts
    # once, by its nearest.
    same_kind = ("and f.subject_id in (select record_id from spectra_processed where pipeline = $8 "
                 "and intensity_quantity is not distinct from $9)" if query_table == "spectra_processed" else "")
    join = ("left join spectra s on s.record_id = f.spectrum_id left join spectra_processed p "
            "on f.subject_table = 'spectra_processed' and p.record_id = f.subject_id") if where else ""
    extra = ", s.technique, s.element, s.edge, s.sample, s.source_kind, p.pipeline, p.intensity_quantity"
    sql = f"""
        with d as (
            select f.spectrum_id, f.subject_id, {dist} as distance
            from (select f.*{extra if where else ""}
                  from spectrum_features f {join}
                  where f.featurizer = $2 and f.featurizer_version = $3 and f.params_json = $4
                    and f.grid_name is not distinct from $5 and f.spectrum_id <> $6 and f.subject_table = $7
                    {same_kind}) f
            {f"where {where}" if where else ""}),
        best as (
            select spectrum_id, min(distance) as distance, arg_min(subject_id, distance) as subject_id
            from d group by spectrum_id order by distance, spectrum_id limit {int(k)})
        select b.spectrum_id, b.distance, s.technique, s.element, s.sample, b.subject_id
        from best b left join spectra s on s.record_id = b.spectrum_id
        order by b.distance, b.spectrum_id
    """
    params = [[float(v) for v in vector], feature, query_version, query_params, query_grid, query_spectrum,
              query_table] + ([query_pipeline, query_quantity] if same_kind else [])
    frame = lake.sql(sql, as_of=sid, params=params).df()
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    frame.attrs.update({"query_spectrum": query_spectrum, "query_vector": query_record, "snapshot": sid,
                        "metric": metric, "feature": feature})
    return frame
