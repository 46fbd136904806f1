"""The model-module contract (ARCHITECTURE, "Models").

A model module declares its name and version, the SQL view it trains on, its
target and unit, and three pure steps: ``fit(frame) -> (artifact, metrics)``,
``predict(artifact, frame) -> frame`` and (de)serialisation of the artifact.
It never touches the catalog or Parquet files: :mod:`matlake.platform.modeling`
reads the view at a snapshot, stores the artifact, registers the model version
with its dataset version (view SQL + snapshot id) and commits predictions.

Artifacts are stored in formats that loading cannot turn into code execution,
because ``objects/`` may be shared storage that others can write to:

- scikit-learn estimators (the default :meth:`ModelModule.dumps`): a **skops**
  zip.  Loading trusts skops' default types plus those the module lists in
  ``trusted_types``; an artifact that needs anything else is refused.
- torch networks (:class:`TorchModelModule`, or :func:`torch_state_dumps` /
  :func:`torch_state_loads`): the state dict only, as **safetensors** (or, when
  safetensors is not installed, ``torch.save`` read back with
  ``weights_only=True``); the architecture is code in the module.

The format is recognised from the bytes (:func:`artifact_format`).  Pickle
artifacts (written by matlake before skops) load only when the caller opts in
with ``allow_pickle=True`` (:func:`load_artifact`).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

if TYPE_CHECKING:
    import torch

ARTIFACT_FORMATS = ("skops", "safetensors", "torch", "pickle", "unknown")


class UnsafeArtifact(ValueError):
    """An artifact that loading would have to trust more than its module declares
    (a pickle without the opt-in, a type not in ``trusted_types``, an unknown format)."""


def artifact_format(data: bytes) -> str:
    """The serialisation format of artifact bytes, one of :data:`ARTIFACT_FORMATS`.

    ``skops``: a zip with ``schema.json``; ``torch``: a ``torch.save`` zip
    (``*/data.pkl``); ``safetensors``: an 8-byte little-endian header length
    followed by a JSON header; ``pickle``: a protocol 2-5 pickle stream.
    """
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            return "unknown"
        if "schema.json" in names:
            return "skops"
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "torch"
        return "unknown"
    if len(data) >= 10:
        n = int.from_bytes(data[:8], "little")
        if 8 + n <= len(data) and data[8:9] == b"{":
            return "safetensors"
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return "pickle"
    return "unknown"


class ModelModule:
    """Base class of model modules.

    ``train_sql`` must return a column ``subject_id`` (the record the row is
    about) and the column named by ``target``; ``predict_sql`` must return
    ``subject_id`` and the feature columns ``fit`` used.

    The default ``dumps``/``loads`` store the artifact with skops.  List in
    ``trusted_types`` the types beyond skops' defaults that your artifacts
    hold (``dumps`` names any that are missing, e.g.
    ``"sklearn.tree._tree.Tree"`` for tree ensembles); loading refuses
    artifacts that need any other type.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    target: ClassVar[str]
    unit: ClassVar[str] = ""
    subject_table: ClassVar[str]
    train_sql: ClassVar[str]
    predict_sql: ClassVar[str]
    trusted_types: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **params: Any) -> None:
        self.params = params

    def fit(self, frame: pd.DataFrame) -> tuple[Any, dict[str, float]]:
        raise NotImplementedError

    def predict(self, artifact: Any, frame: pd.DataFrame) -> pd.DataFrame:
        """Columns ``subject_id``, ``value`` and ``uncertainty`` (NaN when the model gives none)."""
        raise NotImplementedError

    def dumps(self, artifact: Any) -> bytes:
        """The artifact as a skops zip; refuses one that needs types not in ``trusted_types``."""
        import skops.io as sio

        data = sio.dumps(artifact, compression=zipfile.ZIP_DEFLATED)
        self._untrusted(data, "cannot store")
        return data

    def loads(self, data: bytes) -> Any:
        """The artifact from skops bytes, trusting exactly the non-default types it holds,
        after checking that each of them is one this module lists in ``trusted_types``."""
        import skops.io as sio

        fmt = artifact_format(data)
        if fmt != "skops":
            raise UnsafeArtifact(f"{self.name}: expected a skops artifact, found {fmt} bytes")
        return sio.loads(data, trusted=self._untrusted(data, "refuses to load"))

    def _untrusted(self, data: bytes, verb: str) -> list[str]:
        """The types of a skops artifact that skops does not trust by default, all of
        which must be in ``trusted_types``."""
        import skops.io as sio

        needed = sio.get_untrusted_types(data=data)
        extra = sorted(set(needed) - set(self.trusted_types))
        if extra:
            raise UnsafeArtifact(
                f"{self.name} {verb} an artifact holding types that are neither trusted by skops nor listed in "
                f"{type(self).__name__}.trusted_types: {extra} (add the ones the module really produces)")
        return needed

    @classmethod
    def qualified_name(cls) -> str:
        return f"{cls.__module__}:{cls.__qualname__}"


def load_artifact(module: ModelModule, data: bytes, *, allow_pickle: bool = False, what: str = "") -> Any:
    """Deserialise a stored artifact with ``module.loads``, refusing pickles unless ``allow_pickle``.

    ``what`` names the artifact in errors (model version and object id).
    Unpickling runs whatever code the bytes name, so a pickle artifact (from a
    lake written before skops artifacts) loads only on request, and only
    should when everyone who can write the lake's ``objects/`` is trusted.
    """
    if artifact_format(data) == "pickle":
        if not allow_pickle:
            raise UnsafeArtifact(
                f"{what or module.name}: the artifact is a Python pickle (written by an older matlake); unpickling "
                "can run any code placed in the file, so it is refused by default. If you trust everyone who can "
                "write this lake's objects/, opt in with allow_pickle=True (Python) or --allow-pickle "
                "(matlake predict); retraining stores a safe skops/safetensors artifact")
        return pickle.loads(data)  # noqa: S301 - explicit opt-in above
    return module.loads(data)


def torch_state_dumps(net: "torch.nn.Module") -> bytes:
    """A torch network's weights (its ``state_dict``, tensors only) as bytes.

    safetensors when installed (no code in the file at all), else
    ``torch.save`` of the state dict, which :func:`torch_state_loads` reads
    with ``weights_only=True``.  Tensors are copied to CPU first.
    """
    state = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    try:
        from safetensors.torch import save
    except ImportError:
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        return buf.getvalue()
    # One metadata key only: safetensors writes the metadata map in hash order, so two keys
    # could come out in either order and the same weights would hash differently.
    return save(state, metadata={"format": "pt"})


def torch_state_loads(data: bytes, net: "torch.nn.Module") -> "torch.nn.Module":
    """Load weights written by :func:`torch_state_dumps` into ``net`` (built by the
    module's code with the same architecture); returns ``net`` in eval mode."""
    fmt = artifact_format(data)
    if fmt == "safetensors":
        from safetensors.torch import load

        state = load(data)
    elif fmt == "torch":
        import torch

        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    else:
        raise UnsafeArtifact(f"expected a torch state dict (safetensors or torch.save), found {fmt} bytes")
    net.load_state_dict(state)
    net.eval()
    return net


class TorchModelModule(ModelModule):
    """A model module whose artifact is a ``torch.nn.Module`` stored as its state dict.

    ``build_network()`` makes the untrained network from ``self.params`` (the
    architecture is code, never stored); ``fit`` returns a trained network of
    that shape.  Keep anything else ``predict`` needs (e.g. feature scaling)
    in the network as buffers, so it is saved with the weights.
    """

    def build_network(self) -> "torch.nn.Module":
        raise NotImplementedError

    def dumps(self, artifact: "torch.nn.Module") -> bytes:
        return torch_state_dumps(artifact)

    def loads(self, data: bytes) -> "torch.nn.Module":
        return torch_state_loads(data, self.build_network())


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
