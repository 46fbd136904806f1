"""Evaluations of segmentation ensembles on micrographs with ground truth, and phase fractions over time.

One ``segmentation_evaluations`` row is one model (an ensemble, or a baseline)
scored on one set of images (e.g. the frames of a generated melting movie):
pixel metrics of the ensemble's mean probability (accuracy, IoU, Dice, ECE over
15 equal-width bins, Brier, NLL), image-level uncertainty used as a quality flag
(AUROC against per-image error, risk-coverage) and the figures (PNG objects).
One ``phase_fractions`` row is one frame of one evaluated model: the phase's
area fraction as each member and the ensemble see it, the truth when known,
and that frame's uncertainty scores.  Conventions: :mod:`matlake.models.imaging.calibration`
and :mod:`matlake.models.imaging.uncertainty` (entropies in nats).
"""

from __future__ import annotations

import pyarrow as pa

from matlake.schemas.base import Column as C
from matlake.schemas.base import TableSchema

SEGMENTATION_EVALUATIONS = TableSchema(
    name="segmentation_evaluations",
    version=1,
    domain="imaging_evaluation",
    description="A segmentation model's accuracy, calibration and uncertainty-as-quality-flag on a set of images",
    hot=("evaluation", "model_name", "model_id"),
    columns=(
        C("evaluation", pa.string(), "name of the evaluation (image set), e.g. 'ice-movie'", nullable=False),
        C("model_name", pa.string(), "model or ensemble name, e.g. 'EA', 'ER-resnet18', 'smoothed-threshold'",
          nullable=False),
        C("model_version", pa.string(), "version of that model (model_versions version, or the baseline's)"),
        C("model_id", pa.string(), "model_versions.model_id when the model is a stored model version"),
        C("model_parameters_json", pa.string(), "parameters of the model or baseline, JSON"),
        C("n_members", pa.int32(), "ensemble members"),
        C("class_names", pa.list_(pa.string()), "class name per class index"),
        C("phase", pa.string(), "class whose area fraction is tracked (phase_fractions)"),
        C("n_images", pa.int32(), "images (frames) evaluated"),
        C("n_pixels", pa.int64(), "pixels evaluated"),
        C("image_ids", pa.list_(pa.string()), "micrographs record ids evaluated, in order"),
        C("accuracy", pa.float64(), "pixel accuracy of the ensemble prediction (argmax of the mean probability)"),
        C("iou", pa.list_(pa.float64()), "intersection over union per class (null: class absent)"),
        C("dice", pa.list_(pa.float64()), "Dice coefficient per class (null: class absent)"),
        C("mean_iou", pa.float64(), "mean of the defined per-class IoUs"),
        C("ece", pa.float64(), "expected calibration error of the max mean probability"),
        C("mce", pa.float64(), "maximum calibration error over non-empty bins"),
        C("n_bins", pa.int32(), "equal-width confidence bins of ECE/MCE (15)"),
        C("brier", pa.float64(), "multi-class Brier score: mean over pixels of sum_c (p_c - y_c)^2 (0..2)"),
        C("brier_binary", pa.float64(), "two classes only: mean (p_1 - y)^2 (scikit-learn's convention)"),
        C("nll", pa.float64(), "mean negative log-likelihood of the true class", "nats"),
        C("mean_entropy", pa.float64(), "mean predictive entropy over pixels", "nats"),
        C("mean_mutual_information", pa.float64(), "mean mutual information over pixels", "nats"),
        C("quality_score", pa.string(), "per-image uncertainty score used as the quality flag, e.g. 'mean_entropy'"),
        C("error_threshold", pa.float64(), "per-image error rate above which an image counts as bad"),
        C("n_bad_images", pa.int32(), "images with an error rate above error_threshold"),
        C("quality_auroc", pa.float64(), "AUROC of the quality score detecting bad images (null: one kind only)"),
        C("quality_spearman", pa.float64(), "rank correlation of the quality score with the per-image error rate"),
        C("aurc", pa.float64(), "area under the risk-coverage curve, images ranked by the quality score"),
        C("oracle_aurc", pa.float64(), "AURC of the best possible ranking (by the error itself)"),
        C("excess_aurc", pa.float64(), "aurc - oracle_aurc"),
        C("phase_fraction_mae", pa.float64(), "mean |ensemble-mean phase fraction - truth| over images"),
        C("reliability_json", pa.string(), "reliability diagram: bin edges, counts, mean confidence, accuracy, JSON"),
        C("risk_coverage_json", pa.string(), "risk-coverage curve over images: coverage, risk, JSON"),
        C("figures_json", pa.string(),
          "PNG objects: {'reliability'|'risk_coverage'|'phase_fraction'|'panel': sha256}, JSON"),
        C("evaluation_json", pa.string(), "the evaluation's parameters: image selection, snapshot, seeds, JSON"),
    ),
)

PHASE_FRACTIONS = TableSchema(
    name="phase_fractions",
    version=1,
    domain="imaging_evaluation",
    description="Per frame and model: a phase's area fraction (members' mean ± std, ensemble, truth) and uncertainty",
    hot=("evaluation_id", "model_name", "image_id"),
    columns=(
        C("evaluation_id", pa.string(), "record_id of the segmentation_evaluations row", nullable=False),
        C("evaluation", pa.string(), "evaluation name"),
        C("model_name", pa.string(), "model or ensemble name", nullable=False),
        C("model_id", pa.string(), "model_versions.model_id when a stored model version"),
        C("image_id", pa.string(), "micrographs record_id of the frame", nullable=False),
        C("image_version", pa.int32(), "its version"),
        C("frame_index", pa.int32(), "frame index in its stack"),
        C("frame_time", pa.float64(), "time of the frame from the start of the movie", "s"),
        C("phase", pa.string(), "class name whose fraction this is", nullable=False),
        C("fraction_mean", pa.float64(), "mean over members of each member's area fraction (own argmax)"),
        C("fraction_std", pa.float64(), "population standard deviation of the members' fractions"),
        C("fraction_ensemble", pa.float64(), "area fraction of the ensemble prediction (argmax of mean probability)"),
        C("fraction_expected", pa.float64(), "mean probability of the phase over pixels (soft fraction)"),
        C("member_fractions", pa.list_(pa.float64()), "each member's fraction"),
        C("true_fraction", pa.float64(), "fraction in the ground-truth mask (null without one)"),
        C("error_rate", pa.float64(), "fraction of wrong pixels of the ensemble prediction (null without truth)"),
        C("mean_entropy", pa.float64(), "mean predictive entropy of the frame", "nats"),
        C("mean_mutual_information", pa.float64(), "mean mutual information of the frame", "nats"),
        C("uncertain_fraction", pa.float64(), "fraction of pixels with predictive entropy above the threshold"),
        C("flagged", pa.bool_(), "error_rate above the evaluation's error threshold (a bad frame)"),
    ),
)

TABLES = [SEGMENTATION_EVALUATIONS, PHASE_FRACTIONS]

VIEWS = {
    # the latest evaluation table, one row per model and image set: what the notebook shows
    "segmentation_evaluation_summary": """
        select evaluation, model_name, model_version, n_members, n_images, accuracy, mean_iou, ece, brier, nll,
               mean_entropy, mean_mutual_information, quality_score, quality_auroc, aurc, phase_fraction_mae,
               record_id as evaluation_id
        from segmentation_evaluations
    """,
}
