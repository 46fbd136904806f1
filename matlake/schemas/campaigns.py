"""Screening campaigns: runs, candidates, scores, filter decisions, ranks and to-do lists.

Written by :mod:`matlake.models.materials.campaign_lake`.  Rows of one campaign
keep their record id across runs (``derived_record_id('campaign:<name>',
candidate, what)``), so each run adds a version and ``run_id`` says which run
wrote it; ``campaign_runs`` has one record per run.  ``subject_id`` of scores,
decisions, ranks and to-do rows is the ``campaign_candidates`` record.
"""

from __future__ import annotations

import pyarrow as pa

from matlake.schemas.base import Column as C
from matlake.schemas.base import TableSchema

_RUN = (C("run_id", pa.string(), "campaign_runs record of the run that wrote the row", nullable=False),
        C("campaign", pa.string(), "campaign name from the spec", nullable=False))

CAMPAIGN_RUNS = TableSchema(
    name="campaign_runs", version=1, domain="campaigns",
    description="One row per campaign run: spec, snapshot read, pinned models, counts and output digests",
    hot=("campaign",),
    columns=(
        C("campaign", pa.string(), "campaign name", nullable=False),
        C("spec_json", pa.string(), "the spec as canonical JSON", nullable=False),
        C("spec_sha256", pa.string(), "sha256 of spec_json", nullable=False),
        C("snapshot_read", pa.int64(), "snapshot the run read (models, existing compositions)", nullable=False),
        C("model_ids_json", pa.string(), "property -> model_versions.model_id used, JSON"),
        C("retrained_json", pa.string(), "property -> model id trained by this run (retrain = true), JSON"),
        C("counts_json", pa.string(), "closed_form, excluded, candidates, passed, ranked, top_k, JSON"),
        C("n_candidates", pa.int64(), "candidates scored"),
        C("n_passed", pa.int64(), "candidates that passed every filter"),
        C("digests_json", pa.string(),
          "output table -> sha256 of its canonical form (campaign.table_digest), JSON"),
        C("seed", pa.int64(), "seed from the spec"),
    ),
)

CAMPAIGN_CANDIDATES = TableSchema(
    name="campaign_candidates", version=1, domain="campaigns",
    description="Candidates a campaign generated (canonical composition key, formula)",
    hot=("campaign", "candidate_key"),
    columns=(*_RUN,
             C("candidate_id", pa.string(), "sha256 of the canonical key (enumerate.candidate_id)", nullable=False),
             C("candidate_key", pa.string(), "canonical occupation, e.g. 'A:Cs3/4 FA1/4|B:Pb|X:I'", nullable=False),
             C("formula", pa.string(), "formula, e.g. Cs0.75FA0.25PbI3"),
             C("n_mixed_sites", pa.int8(), "number of sites holding more than one species")),
)

CAMPAIGN_SCORES = TableSchema(
    name="campaign_scores", version=1, domain="campaigns",
    description="Predicted property of a candidate by a pinned model version (mean and one-sigma std)",
    hot=("campaign", "property", "subject_id"),
    columns=(*_RUN,
             C("subject_id", pa.string(), "campaign_candidates record", nullable=False),
             C("candidate_id", pa.string(), "candidate id", nullable=False),
             C("property", pa.string(), "property name from the spec", nullable=False),
             C("mean", pa.float64(), "predicted mean", "see unit"),
             C("std", pa.float64(), "predicted one-sigma uncertainty", "see unit"),
             C("unit", pa.string(), "unit of mean and std"),
             C("model_id", pa.string(), "model_versions.model_id that predicted it")),
)

CAMPAIGN_DECISIONS = TableSchema(
    name="campaign_decisions", version=1, domain="campaigns",
    description="Filter decision per candidate: passed, else the first filter that failed and the values it read",
    hot=("campaign", "passed"),
    columns=(*_RUN,
             C("subject_id", pa.string(), "campaign_candidates record", nullable=False),
             C("candidate_id", pa.string(), "candidate id", nullable=False),
             C("passed", pa.bool_(), "true when every filter held", nullable=False),
             C("failed_filter", pa.string(), "name of the first filter that failed"),
             C("reason", pa.string(), "the failed filter's SQL and the values of the columns it reads")),
)

CAMPAIGN_RANKS = TableSchema(
    name="campaign_ranks", version=1, domain="campaigns",
    description="Rank of each candidate that passed the filters (1 = best)",
    hot=("campaign", "rank"),
    columns=(*_RUN,
             C("subject_id", pa.string(), "campaign_candidates record", nullable=False),
             C("candidate_id", pa.string(), "candidate id", nullable=False),
             C("rank", pa.int32(), "1 = best", nullable=False),
             C("score", pa.float64(), "ranking score (score expression; for Pareto ranking minus the summed "
                                      "per-objective ranks)"),
             C("pareto_rank", pa.int32(), "non-domination rank (1 = front) when ranked by objectives"),
             C("top_k", pa.bool_(), "rank <= top_k of the spec")),
)

CAMPAIGN_TODO = TableSchema(
    name="campaign_todo", version=1, domain="campaigns",
    description="Next calculations proposed by an acquisition rule over a run's scores (matlake campaign next)",
    hot=("campaign", "property"),
    columns=(*_RUN,
             C("subject_id", pa.string(), "campaign_candidates record", nullable=False),
             C("candidate_id", pa.string(), "candidate id", nullable=False),
             C("candidate_key", pa.string(), "canonical occupation"),
             C("formula", pa.string(), "formula"),
             C("property", pa.string(), "property the acquisition is about"),
             C("acquisition", pa.string(), "rule: ei or ucb"),
             C("value", pa.float64(), "acquisition value (EI in the property's unit; UCB in its unit)"),
             C("mean", pa.float64(), "predicted mean"),
             C("std", pa.float64(), "predicted std"),
             C("rank", pa.int32(), "1 = compute first"),
             C("budget", pa.int32(), "size of the to-do list")),
)

TABLES = [CAMPAIGN_RUNS, CAMPAIGN_CANDIDATES, CAMPAIGN_SCORES, CAMPAIGN_DECISIONS, CAMPAIGN_RANKS, CAMPAIGN_TODO]
VIEWS: dict[str, str] = {}
