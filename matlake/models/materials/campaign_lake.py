"""Campaigns inside a lake: run a spec, record every output, report, propose the next calculations.

- :func:`run` reads the pinned model versions at one snapshot (retraining them
  first when the spec's ``[active] retrain = true`` and their training view
  changed), leaves out compositions the lake already holds
  (``material_subjects.sites_json``), runs :func:`campaign.run_campaign` and
  commits ``campaign_runs`` / ``_candidates`` / ``_scores`` / ``_decisions`` /
  ``_ranks`` under one ``campaign`` activity that used the snapshot and the
  models: a ranked candidate's lineage reaches the model versions, their
  training snapshot and the raw files of the training data.
- :func:`status` lists a campaign's runs; :func:`report` writes the top table
  (CSV, Markdown) and PNG plots from the records and keeps them as objects;
  :func:`propose` (``matlake campaign next``) ranks the scored candidates not
  yet computed by EI or UCB and commits ``campaign_todo`` (+ a CSV).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from matlake.models.materials import campaign as cp
from matlake.models.materials import enumerate as en
from matlake.platform.lake import ChangeSet, LakeError, new_id

if TYPE_CHECKING:
    from matlake.platform.lake import Lake
    from matlake.platform.modeling import ModelInfo


@dataclass
class ModuleScorer:
    """A pinned model version as a campaign scorer: features -> module.predict -> (mean, std)."""

    info: "ModelInfo"
    module: Any
    artifact: Any
    unit: str = ""

    @property
    def model_id(self) -> str:
        return self.info.model_id

    def predict(self, x: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        want = self.module.feature_names() if callable(getattr(self.module, "feature_names", None)) \
            else list(getattr(self.module, "params", {}).get("feature_names") or [])
        missing = [n for n in want if n not in names]
        if missing:
            raise LakeError(f"model {self.info.name} v{self.info.version} ({self.info.model_id}) was trained on "
                            f"features {want}; the campaign's featurizer gives {list(names)}, missing {missing} "
                            "(make [featurizer] match the model's descriptors)")
        if want:  # the model's column order
            x, names = np.asarray(x)[:, [list(names).index(n) for n in want]], list(want)
        if hasattr(self.module, "matrix"):
            # descriptor-vector modules (models.MaterialsRegressor) read one list column "x"
            frame = pd.DataFrame({"subject_id": np.arange(len(x)).astype(str), "x": list(np.asarray(x, float))})
        else:
            frame = pd.DataFrame(x, columns=list(names))
            frame.insert(0, "subject_id", np.arange(len(frame)).astype(str))
        out = self.module.predict(self.artifact, frame)
        unc = out["uncertainty"] if "uncertainty" in out.columns else np.full(len(out), np.nan)
        return out["value"].to_numpy(float), np.asarray(unc, float)


def _rids(campaign: str, candidate_ids: Sequence[str] | pa.Array | pa.ChunkedArray, what: str = "",
          per_row: pa.Array | pa.ChunkedArray | None = None) -> pa.Array:
    """``derived_record_id(f"campaign:{campaign}", candidate_id, what + per_row)`` of many candidates.

    Hashed inside DuckDB (``sha256`` of the same UTF-8 bytes that hashlib sees): a 10^6-candidate
    campaign needs several million ids, and a Python string and hash object per row made the
    ids cost more than the commit that stores them.  Row order is kept (DuckDB preserves the
    insertion order of a projection without ORDER BY).
    """
    import duckdb

    from matlake.platform.query import to_arrow_table

    ids = candidate_ids if isinstance(candidate_ids, (pa.Array, pa.ChunkedArray)) else pa.array(
        list(candidate_ids), pa.string())
    if len(ids) == 0:
        return pa.array([], pa.string())
    columns = {"c": ids}
    key = _sql_text(what)
    if per_row is not None:
        columns["w"] = per_row
        key = f"{key} || w"
    con = duckdb.connect(":memory:")
    try:
        con.register("ids", pa.table(columns))
        rel = con.sql(f"select left(sha256({_sql_text('campaign:' + campaign)} || chr(0) || c || chr(0) || {key}), 32)"
                      " as r from ids")
        return to_arrow_table(rel).column("r").combine_chunks()
    finally:
        con.close()


def _sql_text(value: str) -> str:
    """``value`` as a DuckDB string literal (NUL bytes through ``chr(0)``, which a literal cannot hold)."""
    parts = ["'" + part.replace("'", "''") + "'" for part in value.split("\x00")]
    return " || chr(0) || ".join(parts)


def resolve_model(lake: "Lake", ref: cp.ModelRef) -> "ModelInfo":
    """A spec's model: an id, ``name`` / ``name:version``, or with ``tag`` the latest version
    of ``name`` registered at or before the tagged snapshot."""
    from matlake.platform.modeling import model_info

    if ref.tag and not ref.model.startswith("model_"):
        row = lake.sql("select model_id from model_versions where name = ? order by version desc limit 1",
                       as_of=ref.tag, params=[ref.model]).fetchone()
        if row is None:
            raise LakeError(f"campaign model for {ref.property}: no version of {ref.model!r} at tag {ref.tag!r}")
        return model_info(lake, row[0])
    return model_info(lake, ref.model)


def _view_fingerprint(lake: "Lake", sql: str, sid: int) -> tuple[int, str]:
    ids = [str(r[0]) for r in lake.sql(f"select subject_id from ({sql}) order by 1", as_of=sid).fetchall()]
    return len(ids), hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _scorers(lake: "Lake", spec: cp.CampaignSpec, sid: int) -> tuple[dict[str, ModuleScorer], dict[str, str]]:
    from matlake.platform.modeling import load_model, train

    retrain = bool(spec.active.get("retrain", False))
    scorers, retrained = {}, {}
    for ref in spec.models:
        info, module, artifact = load_model(lake, resolve_model(lake, ref).model_id)
        if retrain and info.snapshot_id != sid and \
                _view_fingerprint(lake, info.view_sql, sid) != _view_fingerprint(lake, info.view_sql, info.snapshot_id):
            new = train(lake, module, as_of=sid, view_sql=info.view_sql)
            info, module, artifact = load_model(lake, new.model_id)
            retrained[ref.property] = new.model_id
        scorers[ref.property] = ModuleScorer(info, module, artifact, getattr(module, "unit", "") or ref.unit)
    return scorers, retrained


def existing_keys(lake: "Lake", space: en.Space, sid: int) -> list[str]:
    """Canonical keys of ``material_subjects`` compositions at ``sid`` that lie in ``space``."""
    try:
        rows = lake.sql("select distinct sites_json from material_subjects where sites_json is not null",
                        as_of=sid).fetchall()
    except Exception:  # noqa: BLE001 - no tabular data in this lake yet
        return []
    keys = []
    for (text,) in rows:
        try:
            keys.append(en.site_key(json.loads(text), space))
        except (en.SpaceError, ValueError, KeyError, AttributeError):
            continue  # another site pattern or grid: not a candidate of this space
    return sorted(set(keys))


def run(lake: "Lake", spec_path: str | Path | cp.CampaignSpec, as_of: int | str | None = None) -> dict[str, Any]:
    """Run a campaign spec at snapshot ``as_of`` (default: latest) and commit its outputs.

    Returns run id, snapshot committed, counts, digests, model ids and retrained models.
    """
    from matlake.platform import catalog as cat

    spec = spec_path if isinstance(spec_path, cp.CampaignSpec) else cp.CampaignSpec.from_toml(spec_path)
    started = cat.utcnow()
    sid = lake.resolve_snapshot(as_of)
    scorers, retrained = _scorers(lake, spec, sid)
    if retrained:
        sid = lake.last_snapshot()  # the retrain commits; score at the snapshot that holds the new models
    exclude = existing_keys(lake, spec.space, sid)
    out = cp.run_campaign(spec, scorers, exclude_keys=exclude, keep_scored=False)
    return commit_outputs(lake, spec, out, sid, {p: s.model_id for p, s in scorers.items()}, retrained,
                          len(exclude), started)


def commit_outputs(lake: "Lake", spec: cp.CampaignSpec, out: cp.CampaignOutputs, sid: int,
                   model_ids: dict[str, str], retrained: dict[str, str], n_excluded: int,
                   started: Any = None) -> dict[str, Any]:
    """Commit a campaign's outputs (one commit, one ``campaign`` activity that used the
    snapshot ``sid`` and the models)."""
    from matlake.platform import catalog as cat

    started = started or cat.utcnow()
    digests = out.digests()
    counts = {**out.counts, "excluded": n_excluded}
    run_id = new_id("run")
    cs = ChangeSet("campaign", f"campaign {spec.name}: {counts['candidates']} candidates, "
                               f"{counts['passed']} passed, snapshot {sid}")
    act = cs.activity("campaign", spec.name, cp.VERSION, started_at=started, parameters={
        "spec_sha256": spec.digest(), "snapshot_id": sid, "model_ids": model_ids, "seed": spec.seed,
        "digests": digests, "counts": counts, "retrained": retrained, "run_id": run_id})
    act.used("snapshot", str(sid))
    for mid in sorted(set(model_ids.values())):
        act.used("model", mid)
    n = out.candidates.num_rows
    run_cols = {"run_id": pa.array([run_id] * n, pa.string()), "campaign": pa.array([spec.name] * n, pa.string())}

    def with_run(t: pa.Table, what: str | None, subject: bool = True, per_row: pa.Array | None = None) -> pa.Table:
        ids = t.column("candidate_id")
        m = len(ids)
        candidate_rid = _rids(spec.name, ids)  # the candidate record's id: every other row's subject
        cols = {"record_id": candidate_rid if what is None else _rids(spec.name, ids, what, per_row),
                "run_id": run_cols["run_id"].slice(0, m) if m <= n else pa.array([run_id] * m),
                "campaign": run_cols["campaign"].slice(0, m) if m <= n else pa.array([spec.name] * m)}
        if subject:
            cols["subject_id"] = candidate_rid
        for name in t.column_names:
            cols[name] = t.column(name)
        return pa.table(cols)

    cs.add_rows("campaign_candidates", with_run(out.candidates, None, subject=False), act)
    cs.add_rows("campaign_scores", with_run(out.scores, "score:", per_row=out.scores.column("property")), act)
    cs.add_rows("campaign_decisions", with_run(out.decisions, "decision"), act)
    cs.add_rows("campaign_ranks", with_run(out.ranks, "rank"), act)
    cs.add_rows("campaign_runs", [{
        "record_id": run_id, "campaign": spec.name, "spec_json": spec.canonical_json(),
        "spec_sha256": spec.digest(), "snapshot_read": sid, "model_ids_json": json.dumps(model_ids, sort_keys=True),
        "retrained_json": json.dumps(retrained, sort_keys=True), "counts_json": json.dumps(counts, sort_keys=True),
        "n_candidates": counts["candidates"], "n_passed": counts["passed"],
        "digests_json": json.dumps(digests, sort_keys=True), "seed": spec.seed}], act, version=1)
    new_sid = lake.commit(cs)
    return {"run_id": run_id, "snapshot": new_sid, "snapshot_read": sid, "counts": counts, "digests": digests,
            "model_ids": model_ids, "retrained": retrained, "activity_id": act.activity_id}


# --------------------------------------------------------------------------- read back

def runs(lake: "Lake", campaign: str | None = None, as_of: int | str | None = None) -> pd.DataFrame:
    """A campaign's runs (all campaigns when ``campaign`` is None), oldest first."""
    where = "where campaign = ?" if campaign else ""
    params = [campaign] if campaign else []
    try:
        return lake.sql(f"select record_id as run_id, campaign, snapshot_read, n_candidates, n_passed, counts_json, "
                        f"model_ids_json, retrained_json, digests_json, spec_json, created_at from campaign_runs "
                        f"{where} order by created_at, record_id", as_of=as_of, params=params).df()
    except Exception as exc:  # noqa: BLE001
        if "campaign_runs" in str(exc):
            return pd.DataFrame(columns=["run_id", "campaign"])
        raise


def _run_row(lake: "Lake", campaign_or_run: str) -> dict[str, Any]:
    df = runs(lake)
    if campaign_or_run.startswith("run_"):
        df = df[df["run_id"] == campaign_or_run]
    else:
        df = df[df["campaign"] == campaign_or_run]
    if df.empty:
        raise LakeError(f"no campaign run {campaign_or_run!r} in this lake (give a campaign name or a run_... id)")
    return df.iloc[-1].to_dict()


def status(lake: "Lake", campaign: str | None = None) -> pd.DataFrame:
    """One line per run: id, snapshot read, candidates, passed, top candidate, models."""
    df = runs(lake, campaign)
    if df.empty:
        return df
    tops = []
    for rid in df["run_id"]:
        row = lake.sql("select c.formula from campaign_ranks r join campaign_candidates c on c.record_id = r.subject_id "
                       "where r.run_id = ? and r.rank = 1", params=[rid]).fetchone()
        tops.append(row[0] if row else None)
    return pd.DataFrame({"run_id": df["run_id"], "campaign": df["campaign"], "snapshot": df["snapshot_read"],
                         "candidates": df["n_candidates"], "passed": df["n_passed"], "top": tops,
                         "models": df["model_ids_json"], "retrained": df["retrained_json"]})


def scored_table(lake: "Lake", run_id: str, properties: Sequence[str]) -> pa.Table:
    """The wide scored table of a run (candidate_id, candidate_key, formula, n_mixed_sites,
    <p>_mean, <p>_std) rebuilt from its records."""
    piv = ", ".join(f"max(case when s.property = '{p}' then s.mean end) as {p}_mean, "
                    f"max(case when s.property = '{p}' then s.std end) as {p}_std" for p in properties)
    sql = (f"select c.candidate_id, c.candidate_key, c.formula, c.n_mixed_sites, {piv} "
           "from campaign_candidates c join campaign_scores s on s.subject_id = c.record_id "
           "where c.run_id = ? and s.run_id = ? group by all order by c.candidate_id")
    return lake.sql(sql, params=[run_id, run_id]).arrow()


def top_table(lake: "Lake", run_id: str, properties: Sequence[str], k: int | None = None) -> pd.DataFrame:
    cols = ", ".join(f"max(case when s.property = '{p}' then s.mean end) as {p}_mean, "
                     f"max(case when s.property = '{p}' then s.std end) as {p}_std" for p in properties)
    lim = f"limit {int(k)}" if k else ""
    return lake.sql(f"select r.rank, c.formula, c.candidate_key, r.score, r.pareto_rank, {cols} "
                    "from campaign_ranks r join campaign_candidates c on c.record_id = r.subject_id "
                    "join campaign_scores s on s.subject_id = r.subject_id and s.run_id = r.run_id "
                    f"where r.run_id = ? and c.run_id = ? group by all order by r.rank {lim}",
                    params=[run_id, run_id]).df()


def report(lake: "Lake", campaign_or_run: str, out_dir: str | Path) -> dict[str, Any]:
    """Write the report of a run (latest of a campaign, or a run id) into ``out_dir`` and keep
    each file as an object: top.csv, top.md, dist_<p>.png, pareto.png (two or more
    properties), parity_<p>.png (out-of-fold CV predictions of each model at its training
    snapshot, when the module gives them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matlake.platform import catalog as cat
    from matlake.platform.modeling import load_model, read_view

    row = _run_row(lake, campaign_or_run)
    spec = cp.CampaignSpec.from_dict(json.loads(row["spec_json"]))
    run_id = row["run_id"]
    props = spec.properties
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    top = top_table(lake, run_id, props, spec.report.get("top", spec.top_k))
    top.to_csv(out / "top.csv", index=False, float_format="%.6g")
    files.append(out / "top.csv")
    md = ["| " + " | ".join(top.columns) + " |", "|" + "---|" * len(top.columns)]
    md += ["| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r) + " |"
           for r in top.itertuples(index=False)]
    counts = json.loads(row["counts_json"])
    head = (f"# Campaign {spec.name}, run {run_id}\n\nSnapshot {row['snapshot_read']}; models "
            f"{row['model_ids_json']}; {counts['candidates']} candidates (closed-form count of the space "
            f"{counts['closed_form']}, {counts['excluded']} already in the lake), {counts['passed']} passed the "
            f"filters.\n\n")
    (out / "top.md").write_text(head + "\n".join(md) + "\n", encoding="utf-8")
    files.append(out / "top.md")
    scored = scored_table(lake, run_id, props).to_pandas()
    passed = lake.sql("select d.candidate_id from campaign_decisions d where d.run_id = ? and d.passed",
                      params=[run_id]).df()["candidate_id"]
    ok = scored["candidate_id"].isin(set(passed))
    for p in props:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        bins = np.histogram_bin_edges(scored[f"{p}_mean"], bins=40)
        ax.hist(scored[f"{p}_mean"], bins=bins, alpha=0.5, label="all candidates")
        ax.hist(scored.loc[ok, f"{p}_mean"], bins=bins, alpha=0.7, label="passed filters")
        ax.set_xlabel(f"predicted {p}")
        ax.set_ylabel("candidates")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"dist_{p}.png", dpi=90)
        plt.close(fig)
        files.append(out / f"dist_{p}.png")
    if len(props) >= 2:
        from matlake.models.materials.pareto import pareto_front

        (p1, s1), (p2, s2) = spec.objectives[:2] if len(spec.objectives) >= 2 else ((props[0], "max"), (props[1], "max"))
        sub = scored[ok]
        front = pareto_front(sub[[f"{p1}_mean", f"{p2}_mean"]].to_numpy(), [s1, s2]) if len(sub) else np.zeros(0, bool)
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter(sub[f"{p1}_mean"], sub[f"{p2}_mean"], s=6, c="0.6", label="passed")
        ax.scatter(sub.loc[front, f"{p1}_mean"], sub.loc[front, f"{p2}_mean"], s=14, c="C3", label="Pareto front")
        ax.set_xlabel(f"{p1} ({s1})")
        ax.set_ylabel(f"{p2} ({s2})")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "pareto.png", dpi=90)
        plt.close(fig)
        files.append(out / "pareto.png")
    parity_notes = {}
    for p, mid in json.loads(row["model_ids_json"]).items():
        info, module, _ = load_model(lake, mid)
        if not hasattr(module, "cv_predictions"):
            parity_notes[p] = f"{info.name} gives no CV predictions"
            continue
        _, _, frame = read_view(lake, info.view_sql, info.snapshot_id, producer=info.name)
        cv = module.cv_predictions(frame)
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.errorbar(cv["target"], cv["predicted"], yerr=cv["std"], fmt="o", ms=3, alpha=0.7)
        lo, hi = float(min(cv["target"].min(), cv["predicted"].min())), float(max(cv["target"].max(), cv["predicted"].max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        rmse = float(np.sqrt(np.mean((cv["predicted"] - cv["target"]) ** 2)))
        ax.set_title(f"{info.name} v{info.version}\nCV RMSE {rmse:.3g}", fontsize=8)  # long model names
        ax.set_xlabel(f"{p} (training data)")
        ax.set_ylabel(f"{p} (out-of-fold prediction)")
        fig.tight_layout()
        fig.savefig(out / f"parity_{p}.png", dpi=90)
        plt.close(fig)
        files.append(out / f"parity_{p}.png")
    objects = {}
    cs = ChangeSet("campaign-report", f"report of campaign {spec.name} run {run_id}")
    act = cs.activity("campaign-report", spec.name, cp.VERSION, started_at=cat.utcnow(),
                      parameters={"run_id": run_id, "files": [f.name for f in files], "notes": parity_notes})
    act.used("record", run_id, table="campaign_runs")
    for f in files:
        data = f.read_bytes()
        sha = lake.put_object(data)
        media = "image/png" if f.suffix == ".png" else ("text/csv" if f.suffix == ".csv" else "text/markdown")
        cs.add_object(sha, len(data), media_type=media, original_name=f"{spec.name}/{run_id}/{f.name}")
        act.generated("object", sha)
        objects[f.name] = sha
    lake.commit(cs)
    return {"run_id": run_id, "dir": str(out), "files": [str(f) for f in files], "objects": objects,
            "notes": parity_notes}


def propose(lake: "Lake", campaign_or_run: str, budget: int, csv: str | Path | None = None) -> dict[str, Any]:
    """The next ``budget`` calculations of a campaign's latest run (or a run id) by its
    ``[active]`` rule, leaving out compositions the lake holds now; commits ``campaign_todo``
    and writes ``csv`` when given.  EI's best value is the largest (smallest when
    minimising) observed value of the property in the model's training view now."""
    from matlake.platform import catalog as cat
    from matlake.platform.modeling import model_info

    if budget < 1:
        raise LakeError(f"campaign next: --budget must be >= 1, found {budget}")
    row = _run_row(lake, campaign_or_run)
    spec = cp.CampaignSpec.from_dict(json.loads(row["spec_json"]))
    if not spec.active:
        raise LakeError(f"campaign {spec.name}: its spec has no [active] table (property, rule)")
    p = spec.active["property"]
    run_id = row["run_id"]
    sid = lake.last_snapshot()
    info = model_info(lake, json.loads(row["model_ids_json"])[p])
    obs = lake.sql(f"select * from ({info.view_sql})", as_of=sid).df()
    col = next((c for c in ("target", "y", "value") if c in obs.columns), None)
    if col is None:
        raise LakeError(f"campaign next: the training view of {info.name} has no target, y or value column "
                        f"(found {list(obs.columns)})")
    maximize = bool(spec.active.get("maximize", True))
    best = (float(obs[col].max()) if maximize else float(obs[col].min())) if len(obs) else None
    scored = scored_table(lake, run_id, [p])
    todo = cp.next_batch(scored, spec, budget, best, exclude_keys=existing_keys(lake, spec.space, sid))
    m = todo.num_rows
    ids = todo.column("candidate_id")
    rows = pa.table({
        "record_id": _rids(spec.name, ids, f"todo:{p}"), "run_id": pa.array([run_id] * m, pa.string()),
        "campaign": pa.array([spec.name] * m, pa.string()), "subject_id": _rids(spec.name, ids),
        **{c: todo.column(c) for c in todo.column_names}, "budget": pa.array([budget] * m, pa.int32())})
    cs = ChangeSet("campaign-next", f"campaign {spec.name}: next {m} calculations of {p}")
    act = cs.activity("campaign-next", spec.name, cp.VERSION, started_at=cat.utcnow(),
                      parameters={"run_id": run_id, "budget": budget, "property": p, "best": best,
                                  "rule": spec.active.get("rule", "ei"), "snapshot_id": sid})
    act.used("record", run_id, table="campaign_runs")
    act.used("snapshot", str(sid))
    cs.add_rows("campaign_todo", rows, act)
    new_sid = lake.commit(cs)
    frame = todo.to_pandas()
    if csv:
        frame.to_csv(csv, index=False, float_format="%.6g")
    return {"snapshot": new_sid, "run_id": run_id, "best": best, "todo": frame, "activity_id": act.activity_id}
