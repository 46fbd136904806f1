"""The model-module contract (ARCHITECTURE, "Models").

A model module declares its name and version, the SQL view it trains on, its
target and unit, and three pure steps: ``fit(frame) -> (artifact, metrics)``,
``predict(artifact, frame) -> frame`` and (de)serialisation of the artifact.
It never touches the catalog or Parquet files: :mod:`matlake.platform.modeling`
reads the view at a snapshot, stores the artifact, registers the model version
with its dataset version (view SQL + snapshot id) and commits predictions.
"""

from __future__ import annotations

import pickle
from typing import Any, ClassVar

import pandas as pd


class ModelModule:
    """Base class of model modules.

    ``train_sql`` must return a column ``subject_id`` (the record the row is
    about) and the column named by ``target``; ``predict_sql`` must return
    ``subject_id`` and the feature columns ``fit`` used.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    target: ClassVar[str]
    unit: ClassVar[str] = ""
    subject_table: ClassVar[str]
    train_sql: ClassVar[str]
    predict_sql: ClassVar[str]

    def __init__(self, **params: Any) -> None:
        self.params = params

    def fit(self, frame: pd.DataFrame) -> tuple[Any, dict[str, float]]:
        raise NotImplementedError

    def predict(self, artifact: Any, frame: pd.DataFrame) -> pd.DataFrame:
        """Columns ``subject_id``, ``value`` and ``uncertainty`` (NaN when the model gives none)."""
        raise NotImplementedError

    def dumps(self, artifact: Any) -> bytes:
        return pickle.dumps(artifact, protocol=5)

    def loads(self, data: bytes) -> Any:
        # Artifacts are objects this lake wrote itself (content-addressed, hash-checked).
        return pickle.loads(data)  # noqa: S301

    @classmethod
    def qualified_name(cls) -> str:
        return f"{cls.__module__}:{cls.__qualname__}"


def derived_record_id(producer: str, subject_id: str, key: str = "") -> str:
    """Stable id of a derived record: the same producer (by name, not version),
    subject and key give the same id, so a newer producer version adds a version."""
    import hashlib

    return hashlib.sha256(f"{producer}\x00{subject_id}\x00{key}".encode()).hexdigest()[:32]


class Featurizer:
    """A pure per-subject step: one input row in, rows for one or more tables out.

    ``input_sql`` returns one row per subject with a ``subject_id`` column.
    ``featurize_one(row)`` returns ``{table: [row dict, ...]}``; each output
    row carries ``record_id`` (use :func:`derived_record_id`) and normally a
    ``subject_id``.  Raising for one subject records the error and the run
    goes on with the others.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    subject_table: ClassVar[str]
    input_sql: ClassVar[str]

    def __init__(self, **params: Any) -> None:
        self.params = params

    def featurize_one(self, row: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        raise NotImplementedError
