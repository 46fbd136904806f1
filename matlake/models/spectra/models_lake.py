"""The lake side of generated spectra and spectra models.

:func:`generate_into` commits a generated data set
(:mod:`matlake.models.spectra.generator`) through
:func:`matlake.platform.derivation.commit_derived`: one ``generate`` activity
whose parameters record the generator's name, version, seed and every model
parameter, generating the ``spectra`` rows (``source_kind = 'generated'``) and
their ``spectrum_labels`` rows (``method = 'planted by generator'``).  The same
set generated again is skipped (the same activity already made it) unless
``force``; a new generator version adds versions of the same records.

:func:`train_spectra_model` builds a model module of
:mod:`matlake.models.spectra.models` from its parameters and trains it through
:func:`matlake.platform.modeling.train`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from matlake.models.spectra.generator import (
    GENERATOR_NAME,
    GENERATOR_VERSION,
    generate,
    generated_rows,
    parameters_from,
)

if TYPE_CHECKING:
    from matlake.platform.lake import Lake
    from matlake.platform.modeling import ModelInfo


def generate_into(lake: "Lake", kind: str, n: int, seed: int, dataset: str = "train",
                  overrides: dict[str, Any] | None = None, force: bool = False) -> dict[str, Any]:
    """Generate ``n`` samples of ``kind`` ('xanes' or 'eels') with ``seed`` and commit them.

    ``overrides`` changes model parameters (names of
    :class:`~matlake.models.spectra.generator.XanesParameters` /
    :class:`~matlake.models.spectra.generator.EelsParameters`).  Returns
    ``{"snapshot", "activity_id", "n_spectra", "n_labels", "skipped", "dataset"}``.
    """
    from matlake.platform.derivation import commit_derived, find_same_run

    gset = generate(kind, n, seed, dataset, parameters_from(kind, overrides or {}))
    rows = generated_rows(gset)
    params = gset.parameters_record()
    out = {"n_spectra": len(rows["spectra"]), "n_labels": len(rows["spectrum_labels"]), "dataset": dataset}
    if not force:
        done = find_same_run(lake, "generate", GENERATOR_NAME, GENERATOR_VERSION, params, {})
        if done:
            return {**out, "snapshot": None, "activity_id": done, "skipped": True}
    snapshot, activity = commit_derived(
        lake, kind="generate", name=GENERATOR_NAME, version=GENERATOR_VERSION, parameters=params, used={},
        rows=rows, message=f"generate {n} {kind} samples (data set {dataset}, seed {seed}); not measured data")
    return {**out, "snapshot": snapshot, "activity_id": activity, "skipped": False}


def train_spectra_model(lake: "Lake", module: str, as_of: int | str | None = None,
                        **params: Any) -> "ModelInfo":
    """Train the spectra model ``module`` (a short name of
    :data:`~matlake.models.spectra.models.MODEL_MODULES` or ``package.module:Class``) with ``params``."""
    from matlake.models.spectra.models import MODEL_MODULES
    from matlake.platform.modeling import load_module, train

    if module in MODEL_MODULES:
        instance = MODEL_MODULES[module](**params)
    elif ":" in module:
        instance = load_module(module, params)
    else:
        raise ValueError(f"spectra model {module!r}: expected one of {', '.join(sorted(MODEL_MODULES))} "
                         "or package.module:Class")
    return train(lake, instance, as_of=as_of)
