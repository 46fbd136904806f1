"""Screening campaigns: spec, featurisation, scoring, filters, ranking (pure core).

A campaign spec is a TOML file::

    name = "abx3-gap"
    seed = 0                       # recorded; every random step of a campaign takes it
    batch_size = 65536             # candidates per record batch
    pessimistic_k = 1.0            # k of the <p>_lo / <p>_hi columns (mean -/+ k std)

    [space]                        # see matlake.models.materials.enumerate.Space.from_dict
    grid = 4
    max_mixed_sites = 1
    [[space.sites]]
    name = "A"
    species = ["Cs", "MA", "FA"]
    [space.constraints]
    charge_neutral = true
    tolerance_factor = [0.8, 1.0]

    [featurizer]
    name = "site-mean"             # or "package.module:callable" (batch, space, params) -> (X, names)
    properties = ["ionic_radius", "mass"]

    [[models]]
    property = "gap"               # prediction columns gap_mean, gap_std, gap_lo, gap_hi
    model = "model_..."            # a model id, a model name (latest) or name:version
    tag = "v1"                     # optional: the latest version trained at or before tag v1

    [[filters]]
    name = "gap-window"
    where = "gap_lo >= 1.0 and gap_hi <= 2.0"   # DuckDB SQL over the prediction columns

    [ranking]
    score = "gap_mean - 0.5 * gap_std"           # or objectives = [["gap", "max"], ["ehull", "min"]]
    top_k = 20

    [active]                       # matlake campaign next
    property = "gap"
    rule = "ei"                    # or "ucb" (kappa)
    maximize = true
    retrain = true

:func:`run_campaign` streams candidates through featurisation and the
scorers batch by batch, runs the filters in DuckDB on each scored batch
(recording for every candidate which filter failed and the values it saw),
ranks the candidates that passed and returns Arrow tables.  Outputs are
deterministic: same spec, same model artifacts and same excluded keys give
byte-identical tables, and :func:`table_digest` (sha256 of the table sorted
by its key columns and written as one Arrow IPC stream without metadata) is
what "same content hash" means.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from matlake.models.materials import enumerate as en

NAME = "campaign"
VERSION = "1"
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SpecError(ValueError):
    """A campaign spec that cannot be run (names the field, expected and found)."""

    def __init__(self, field_: str, expected: str, found: Any, source: str = "") -> None:
        where = f"{source}: " if source else ""
        super().__init__(f"{where}campaign spec: {field_}: expected {expected}, found {found!r}")
        self.field, self.expected, self.found = field_, expected, found


# --------------------------------------------------------------------------- spec

@dataclass(frozen=True)
class ModelRef:
    property: str
    model: str
    tag: str | None = None
    unit: str = ""


@dataclass(frozen=True)
class FilterSpec:
    name: str
    where: str


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    space: en.Space
    featurizer: dict[str, Any]
    models: tuple[ModelRef, ...]
    filters: tuple[FilterSpec, ...] = ()
    score: str | None = None
    objectives: tuple[tuple[str, str], ...] = ()
    top_k: int = 20
    pessimistic_k: float = 1.0
    seed: int = 0
    batch_size: int = 65536
    report: dict[str, Any] = field(default_factory=dict)
    active: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def properties(self) -> list[str]:
        return [m.property for m in self.models]

    def canonical_json(self) -> str:
        """The spec as sorted JSON (what its digest covers)."""
        return json.dumps(self.raw, sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], source: str = "") -> "CampaignSpec":
        def need(key: str, kind: type, expected: str) -> Any:
            if key not in doc or not isinstance(doc[key], kind):
                raise SpecError(key, expected, doc.get(key), source)
            return doc[key]

        known = {"name", "seed", "batch_size", "pessimistic_k", "space", "featurizer", "models", "filters",
                 "ranking", "report", "active"}
        extra = sorted(set(doc) - known)
        if extra:
            raise SpecError("top-level keys", f"a subset of {sorted(known)}", extra, source)
        name = need("name", str, "a campaign name")
        try:
            space = en.Space.from_dict(need("space", dict, "a [space] table"))
        except en.SpaceError as exc:
            raise SpecError(f"space.{exc.field}", exc.expected, exc.found, source) from None
        feat = dict(doc.get("featurizer", {"name": "site-mean"}))
        if "name" not in feat:
            raise SpecError("featurizer.name", "'site-mean' or 'package.module:callable'", feat, source)
        models = []
        for i, m in enumerate(need("models", list, "a list of [[models]] tables")):
            if not isinstance(m, dict) or not isinstance(m.get("property"), str) or not isinstance(m.get("model"), str):
                raise SpecError(f"models[{i}]", "a table with property and model", m, source)
            if not IDENT.match(m["property"]):
                raise SpecError(f"models[{i}].property", "an SQL identifier (letters, digits, _)", m["property"], source)
            models.append(ModelRef(m["property"], m["model"], m.get("tag"), str(m.get("unit", ""))))
        props = [m.property for m in models]
        if len(set(props)) != len(props):
            raise SpecError("models", "one model per property", props, source)
        filters = []
        for i, f in enumerate(doc.get("filters", [])):
            if not isinstance(f, dict) or not isinstance(f.get("where"), str):
                raise SpecError(f"filters[{i}]", "a table with where = SQL", f, source)
            filters.append(FilterSpec(str(f.get("name", f"filter{i + 1}")), f["where"]))
        ranking = dict(doc.get("ranking", {}))
        score = ranking.get("score")
        objectives = tuple((str(p), str(s)) for p, s in ranking.get("objectives", []))
        if (score is None) == (not objectives):
            raise SpecError("ranking", "exactly one of score (SQL) or objectives ([[property, max|min], ...])",
                            ranking, source)
        for p, s in objectives:
            if p not in props or s not in ("max", "min"):
                raise SpecError("ranking.objectives", f"[property, 'max'|'min'] with property in {props}",
                                [p, s], source)
        active = dict(doc.get("active", {}))
        if active and active.get("property") not in props:
            raise SpecError("active.property", f"one of {props}", active.get("property"), source)
        return cls(name=name, space=space, featurizer=feat, models=tuple(models), filters=tuple(filters),
                   score=score, objectives=objectives, top_k=int(ranking.get("top_k", 20)),
                   pessimistic_k=float(doc.get("pessimistic_k", 1.0)), seed=int(doc.get("seed", 0)),
                   batch_size=int(doc.get("batch_size", 65536)), report=dict(doc.get("report", {})),
                   active=active, raw=json.loads(json.dumps(dict(doc), default=str)))

    @classmethod
    def from_toml(cls, path: str | Path) -> "CampaignSpec":
        p = Path(path)
        try:
            doc = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise SpecError("file", "valid TOML", str(exc), str(p)) from None
        return cls.from_dict(doc, source=str(p))


# --------------------------------------------------------------------------- featurizers

# Stand-in elemental table for the built-in site-mean featurizer: Shannon ionic radius
# (Angstrom, as in enumerate.DEFAULT_RADII) and formula mass (u; MA = CH3NH3, FA = CH(NH2)2).
ELEMENT_PROPERTIES: dict[str, dict[str, float]] = {
    sp: {"ionic_radius": r} for sp, r in en.DEFAULT_RADII.items()
}
_MASS = {"K": 39.098, "Rb": 85.468, "Cs": 132.905, "MA": 32.065, "FA": 45.064, "Na": 22.990, "Pb": 207.2,
         "Sn": 118.71, "Ge": 72.63, "Ca": 40.078, "Sr": 87.62, "Ba": 137.327, "F": 18.998, "Cl": 35.45,
         "Br": 79.904, "I": 126.904, "O": 15.999}
for _sp, _m in _MASS.items():
    ELEMENT_PROPERTIES.setdefault(_sp, {})["mass"] = _m


class Featurize(Protocol):
    def __call__(self, batch: pa.RecordBatch, space: en.Space, params: Mapping[str, Any]) -> tuple[np.ndarray, list[str]]:
        ...


def site_mean(batch: pa.RecordBatch, space: en.Space, params: Mapping[str, Any]) -> tuple[np.ndarray, list[str]]:
    """Per-site fraction-weighted means of elemental properties: one column ``<site>_<property>``
    per site and property (units of the property), computed as one matrix product per site."""
    props = list(params.get("properties", ["ionic_radius", "mass"]))
    table = {**ELEMENT_PROPERTIES, **{k: dict(v) for k, v in params.get("table", {}).items()}}
    cols, names = [], []
    for s in space.sites:
        frac = np.column_stack([batch.column(f"{s.name}_{sp}").to_numpy() for sp in s.species])
        missing = [(sp, p) for sp in s.species for p in props if p not in table.get(sp, {})]
        if missing:
            raise SpecError("featurizer.table", "a value for every species and property", missing)
        values = np.array([[table[sp][p] for p in props] for sp in s.species])
        cols.append(frac @ values)
        names += [f"{s.name}_{p}" for p in props]
    return np.hstack(cols), names


def elemental_site_mean(batch: pa.RecordBatch, space: en.Space, params: Mapping[str, Any]
                        ) -> tuple[np.ndarray, list[str]]:
    """Per-site means of the elemental property tables of
    :mod:`matlake.models.materials.descriptors` (``site_features`` with stat ``mean``; the A
    site uses the 12-coordinate table).  A site mean is linear in the fractions, so each
    pure species is featurised once and a batch is one matrix product per site."""
    from matlake.models.materials.descriptors import site_features

    pattern = [s.name for s in space.sites]
    blocks, names = [], []
    for j, s in enumerate(space.sites):
        rows = [{t.name: ({sp: 1.0} if t.name == s.name else {t.species[0]: 1.0}) for t in space.sites}
                for sp in s.species]
        x, n, _units = site_features(rows, pattern, stats=("mean",), a_site_table=bool(params.get("a_site_table", True)))
        cols = [i for i, name in enumerate(n) if name.startswith(f"{s.name}_")]
        frac = np.column_stack([batch.column(f"{s.name}_{sp}").to_numpy() for sp in s.species])
        values = x[:, cols]
        missing = np.isnan(values)  # a property a species lacks: NaN only where that species is present
        block = frac @ np.where(missing, 0.0, values)
        block[(frac > 0) @ missing] = np.nan
        blocks.append(block)
        names += [n[i] for i in cols]
    return np.hstack(blocks), names


FEATURIZERS: dict[str, Featurize] = {"site-mean": site_mean, "elemental-site-mean": elemental_site_mean}


def featurizer_of(spec: CampaignSpec) -> Featurize:
    name = spec.featurizer["name"]
    if name in FEATURIZERS:
        return FEATURIZERS[name]
    mod, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise SpecError("featurizer.name", f"one of {sorted(FEATURIZERS)} or package.module:callable",
                        name) from exc


def featurizer_params(spec: CampaignSpec) -> dict[str, Any]:
    return {k: v for k, v in spec.featurizer.items() if k != "name"}


# --------------------------------------------------------------------------- scoring

class Scorer(Protocol):
    """A pinned model for one property: ``predict(X, names) -> (mean, std)``."""

    model_id: str
    unit: str

    def predict(self, x: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        ...


@dataclass
class CampaignOutputs:
    candidates: pa.Table
    scores: pa.Table
    decisions: pa.Table
    ranks: pa.Table
    counts: dict[str, int]
    scored: pa.Table | None = None  # wide: key columns + <p>_mean/_std/_lo/_hi (for reports)

    def tables(self) -> dict[str, pa.Table]:
        return {"candidates": self.candidates, "scores": self.scores, "decisions": self.decisions,
                "ranks": self.ranks}

    def digests(self) -> dict[str, str]:
        return {k: table_digest(v, SORT_KEYS[k]) for k, v in self.tables().items()}


SORT_KEYS = {"candidates": ("candidate_id",), "scores": ("candidate_id", "property"),
             "decisions": ("candidate_id",), "ranks": ("candidate_id",), "todo": ("candidate_id",)}


def table_digest(table: pa.Table, sort_keys: Sequence[str]) -> str:
    """sha256 of ``table`` in canonical form: rows sorted by ``sort_keys``, one record batch,
    schema metadata dropped, written as an Arrow IPC stream (no timestamps in it)."""
    t = table.replace_schema_metadata(None)
    t = pa.Table.from_arrays([c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in t.columns],
                             schema=pa.schema([f.remove_metadata() for f in t.schema]))
    if t.num_rows:
        t = t.sort_by([(k, "ascending") for k in sort_keys])
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, t.schema) as w:
        for b in t.combine_chunks().to_batches(max_chunksize=max(t.num_rows, 1)):
            w.write_batch(b)
    return hashlib.sha256(sink.getvalue()).hexdigest()


def score_batch(batch: pa.RecordBatch, spec: CampaignSpec, scorers: Mapping[str, Scorer],
                featurize: Featurize | None = None) -> pa.RecordBatch:
    """Featurise one candidate batch and add ``<p>_mean, <p>_std, <p>_lo, <p>_hi`` per property."""
    featurize = featurize or featurizer_of(spec)
    x, names = featurize(batch, spec.space, featurizer_params(spec))
    cols = [batch.column(n) for n in ("candidate_id", "candidate_key", "formula", "n_mixed_sites")]
    fields = [batch.schema.field(n) for n in ("candidate_id", "candidate_key", "formula", "n_mixed_sites")]
    k = spec.pessimistic_k
    for p in spec.properties:
        mean, std = scorers[p].predict(x, names)
        mean = np.asarray(mean, np.float64)
        std = np.nan_to_num(np.asarray(std, np.float64), nan=0.0)
        for suffix, arr in (("mean", mean), ("std", std), ("lo", mean - k * std), ("hi", mean + k * std)):
            cols.append(pa.array(arr, pa.float64()))
            fields.append(pa.field(f"{p}_{suffix}", pa.float64()))
    return pa.RecordBatch.from_arrays(cols, schema=pa.schema(fields))


def _arrow(cursor: Any) -> pa.Table:
    """The whole pending result as an Arrow table, on DuckDB 1.4 to 2.x."""
    from matlake.platform.query import to_arrow_table

    return to_arrow_table(cursor)


def _referenced(expr: str, columns: Sequence[str]) -> list[str]:
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expr))
    return [c for c in columns if c in words]


def decide_batch(scored: pa.RecordBatch, filters: Sequence[FilterSpec], con: Any) -> pa.Table:
    """Run the filters over one scored batch in DuckDB: per candidate ``passed``, the first
    filter that failed and a reason naming it and the values of the columns it reads."""
    ids = scored.column("candidate_id")
    if not filters:
        return pa.table({"candidate_id": ids, "passed": pa.array(np.ones(len(ids), bool)),
                         "failed_filter": pa.nulls(len(ids), pa.string()), "reason": pa.nulls(len(ids), pa.string())})
    con.register("scored", pa.Table.from_batches([scored]))
    try:
        sel = ", ".join(f"coalesce(({f.where}), false) as f{i}" for i, f in enumerate(filters))
        res = _arrow(con.sql(f"select {sel} from scored"))
    except Exception as exc:  # noqa: BLE001 - DuckDB's error names the bad expression
        raise SpecError("filters", "SQL over the prediction columns " + ", ".join(scored.schema.names),
                        f"{[f.where for f in filters]}: {exc}") from None
    finally:
        con.unregister("scored")
    ok = np.column_stack([res.column(i).to_numpy(zero_copy_only=False) for i in range(len(filters))]).astype(bool)
    passed = ok.all(1)
    first = np.where(passed, -1, np.argmin(ok, axis=1))
    failed = [None if j < 0 else filters[j].name for j in first]
    reasons: list[str | None] = [None] * len(ids)
    cache: dict[int, tuple[list[str], list[np.ndarray]]] = {}
    for i in np.nonzero(~passed)[0]:
        j = int(first[i])
        if j not in cache:
            cols = _referenced(filters[j].where, scored.schema.names)
            cache[j] = (cols, [scored.column(c).to_numpy(zero_copy_only=False) for c in cols])
        cols, arrays = cache[j]
        vals = ", ".join(f"{c}={a[i]:.6g}" if isinstance(a[i], (float, np.floating)) else f"{c}={a[i]}"
                         for c, a in zip(cols, arrays))
        reasons[i] = f"failed {filters[j].name} ({filters[j].where}): {vals}"
    return pa.table({"candidate_id": ids, "passed": pa.array(passed), "failed_filter": pa.array(failed, pa.string()),
                     "reason": pa.array(reasons, pa.string())})


def rank(scored: pa.Table, spec: CampaignSpec, con: Any) -> pa.Table:
    """Rank the candidates of ``scored`` (those that passed): by the score expression
    (descending), or by Pareto rank over the objectives then the sum of the objectives'
    ranks; ties broken by candidate key.  Columns: candidate_id, rank (1 = best), score,
    pareto_rank (null with a score), top_k."""
    from matlake.models.materials.pareto import pareto_ranks, rank_order

    n = scored.num_rows
    keys = scored.column("candidate_key").to_pylist()
    pr = None
    if spec.score is not None:
        con.register("scored", scored)
        try:
            out = _arrow(con.sql(f"select cast(({spec.score}) as double) as s from scored"))
        except Exception as exc:  # noqa: BLE001
            raise SpecError("ranking.score", "an SQL expression over " + ", ".join(scored.schema.names),
                            f"{spec.score}: {exc}") from None
        finally:
            con.unregister("scored")
        score = out.column(0).to_numpy(zero_copy_only=False).astype(np.float64) if n else np.zeros(0)
        order = rank_order(score, keys)
    else:
        vals = np.column_stack([scored.column(f"{p}_mean").to_numpy() for p, _ in spec.objectives]) if n \
            else np.zeros((0, len(spec.objectives)))
        pr = pareto_ranks(vals, [s for _, s in spec.objectives])
        # Within a front: the candidate better on average over the objectives' per-objective ranks first.
        per = np.zeros(n)
        for j, (_, s) in enumerate(spec.objectives):
            col = vals[:, j] if s == "max" else -vals[:, j]
            per += np.argsort(np.argsort(-col, kind="stable"), kind="stable")
        score = -per
        order = np.lexsort((np.argsort(np.argsort(np.asarray(keys, object), kind="stable")), per, pr)) if n \
            else np.zeros(0, np.int64)
    ranks = np.empty(n, np.int32)
    ranks[order] = np.arange(1, n + 1, dtype=np.int32)
    return pa.table({"candidate_id": scored.column("candidate_id"), "rank": pa.array(ranks),
                     "score": pa.array(score.astype(np.float64)),
                     "pareto_rank": pa.array(pr.astype(np.int32)) if pr is not None else pa.nulls(n, pa.int32()),
                     "top_k": pa.array(ranks <= spec.top_k)})


def run_campaign(spec: CampaignSpec, scorers: Mapping[str, Scorer], exclude_keys: Iterable[str] = (),
                 featurize: Featurize | None = None, keep_scored: bool = True,
                 blas_threads: int | None = 1) -> CampaignOutputs:
    """Candidates -> features -> scores -> filter decisions -> ranks, streamed batch by batch.

    ``scorers`` maps each spec property to its pinned model; ``exclude_keys`` are
    candidate keys already known (not generated again).  BLAS runs on
    ``blas_threads`` threads (default 1: a multi-threaded reduction may change the
    last bits of a prediction, and the outputs must be byte-identical on rerun;
    None leaves the library's setting).
    """
    if blas_threads is None:
        return _run_campaign(spec, scorers, exclude_keys, featurize, keep_scored)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(blas_threads):
        return _run_campaign(spec, scorers, exclude_keys, featurize, keep_scored)


def _run_campaign(spec: CampaignSpec, scorers: Mapping[str, Scorer], exclude_keys: Iterable[str],
                  featurize: Featurize | None, keep_scored: bool) -> CampaignOutputs:
    import duckdb

    missing = [p for p in spec.properties if p not in scorers]
    if missing:
        raise SpecError("models", f"a scorer for every property", missing)
    featurize = featurize or featurizer_of(spec)
    con = duckdb.connect()
    cand, scores, decisions, scored_parts, passed_parts = [], [], [], [], []
    units = {m.property: (scorers[m.property].unit or m.unit) for m in spec.models}
    for batch in en.enumerate_candidates(spec.space, spec.batch_size, exclude_keys):
        cand.append(pa.Table.from_batches([batch]).select(["candidate_id", "candidate_key", "formula",
                                                           "n_mixed_sites"]))
        sb = score_batch(batch, spec, scorers, featurize)
        for p in spec.properties:
            n = sb.num_rows
            scores.append(pa.table({
                "candidate_id": sb.column("candidate_id"), "property": pa.array([p] * n, pa.string()),
                "mean": sb.column(f"{p}_mean"), "std": sb.column(f"{p}_std"),
                "unit": pa.array([units[p]] * n, pa.string()),
                "model_id": pa.array([scorers[p].model_id] * n, pa.string())}))
        dec = decide_batch(sb, spec.filters, con)
        decisions.append(dec)
        st = pa.Table.from_batches([sb])
        passed_parts.append(st.filter(dec.column("passed")))
        if keep_scored:
            scored_parts.append(st)
    schema_sc = pa.schema([("candidate_id", pa.string()), ("property", pa.string()), ("mean", pa.float64()),
                           ("std", pa.float64()), ("unit", pa.string()), ("model_id", pa.string())])
    if not cand:
        raise SpecError("space", "at least one candidate after constraints and exclusions", 0)
    candidates = pa.concat_tables(cand)
    passed = pa.concat_tables(passed_parts)
    ranks = rank(passed, spec, con)
    con.close()
    counts = {"closed_form": en.count(spec.space), "candidates": candidates.num_rows,
              "passed": passed.num_rows, "ranked": ranks.num_rows, "top_k": min(spec.top_k, ranks.num_rows)}
    return CampaignOutputs(candidates=candidates, scores=pa.concat_tables(scores) if scores else schema_sc.empty_table(),
                           decisions=pa.concat_tables(decisions), ranks=ranks, counts=counts,
                           scored=pa.concat_tables(scored_parts) if keep_scored else None)


def next_batch(scored: pa.Table, spec: CampaignSpec, budget: int, best: float | None,
               exclude_keys: Iterable[str] = ()) -> pa.Table:
    """The next ``budget`` candidates to compute by the spec's acquisition rule (``[active]``):
    candidate_id, candidate_key, formula, acquisition (rule), value, mean, std, rank.
    Ties are broken by candidate key, so the list is deterministic."""
    from matlake.models.materials.acquisition import acquire
    from matlake.models.materials.pareto import rank_order

    a = spec.active
    if not a:
        raise SpecError("active", "an [active] table (property, rule)", None)
    p = a["property"]
    rule = str(a.get("rule", "ei"))
    done = pa.array(sorted(set(exclude_keys)), pa.string())
    if len(done):
        import pyarrow.compute as pc

        scored = scored.filter(pc.invert(pc.is_in(scored.column("candidate_key"), value_set=done)))
    mean = scored.column(f"{p}_mean").to_numpy()
    std = scored.column(f"{p}_std").to_numpy()
    maximize = bool(a.get("maximize", True))
    if rule == "ei" and best is None:
        best = float(np.max(mean) if maximize else np.min(mean)) if len(mean) else 0.0
    value = acquire(rule, mean, std, best=best, maximize=maximize, kappa=float(a.get("kappa", 2.0)),
                    xi=float(a.get("xi", 0.0)))
    order = rank_order(value, scored.column("candidate_key").to_pylist())[:budget]
    take = pa.array(order, pa.int64())
    sub = scored.take(take)
    return pa.table({"candidate_id": sub.column("candidate_id"), "candidate_key": sub.column("candidate_key"),
                     "formula": sub.column("formula"), "property": pa.array([p] * len(order), pa.string()),
                     "acquisition": pa.array([rule] * len(order), pa.string()),
                     "value": pa.array(value[order]), "mean": sub.column(f"{p}_mean"),
                     "std": sub.column(f"{p}_std"), "rank": pa.array(np.arange(1, len(order) + 1, dtype=np.int32))})


def stream_scores(spec: CampaignSpec, scorers: Mapping[str, Scorer],
                  featurize: Featurize | None = None) -> Iterator[pa.RecordBatch]:
    """Scored record batches of the whole space, one at a time (bounded memory; for benches
    and exports that do not keep every candidate)."""
    featurize = featurize or featurizer_of(spec)
    for batch in en.enumerate_candidates(spec.space, spec.batch_size):
        yield score_batch(batch, spec, scorers, featurize)


def callable_scorer(model_id: str, fn: Callable[[np.ndarray, Sequence[str]], tuple[np.ndarray, np.ndarray]],
                    unit: str = "") -> Scorer:
    """A :class:`Scorer` from a function (tests, notebooks)."""

    @dataclass
    class _S:
        model_id: str
        unit: str

        def predict(self, x: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
            return fn(x, names)

    return _S(model_id, unit)
