"""Classify speckle patterns by the disks' number density (pure; torch CNN + a radial baseline).

Input of both models: the measured pixels of a pattern divided by their mean
(so the count level drops out of the scale), ``log(1 + I / <I>)``, the beam stop
set to 0.

- :class:`SpeckleCNN`: three 3x3 convolution blocks (8, 16, 32 channels, ReLU,
  2x2 max pooling), 4x4 average pooling, two dense layers.  A second input channel
  holds ``|q|`` of each pixel (normalised to 1 at the detector edge), so the
  convolutions know where the ring of the structure-factor peak lies.  Training:
  Adam, cross-entropy, mini-batches shuffled by a seeded ``torch.Generator``,
  augmentation by the symmetries of an isotropic pattern about q = 0 (transpose and
  the mirror ``i -> (n - i) mod n``).  ``torch.manual_seed(seed)`` fixes the
  initial weights; the seed is in the returned history.  CUDA is used when
  available (``device=None``).
- :func:`fit_radial_baseline`: the log of the azimuthal average (integer-pixel rings) of
  ``I / <I>``, standardised, into a multinomial logistic regression (scikit-learn).

Lower counts: ``TrainConfig.thin_counts = (low, high)`` thins every training pattern of a
batch binomially to a total drawn log-uniformly in that range, which is exact for Poisson
counts; without it the CNN is trained at the simulated count level only.

:func:`evaluate` gives per-class accuracy (recall), macro-F1, the confusion
matrix (rows = true class) and the chance level 1/K; :func:`transfer_study` trains
on monodisperse patterns and measures the drop on polydisperse and lower-count ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from matlake.models.base import TorchModelModule
from matlake.optional import require_torch

if TYPE_CHECKING:
    import torch

NAME = "speckle-density-cnn"
VERSION = "1"


def default_device() -> str:
    """'cuda' when torch sees a GPU, else 'cpu'."""
    torch = require_torch("the speckle classifier")
    return "cuda" if torch.cuda.is_available() else "cpu"


def preprocess(patterns: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n, H, W) counts -> (n, H, W) float32 ``log(1 + I / mean_valid(I))`` with masked pixels 0."""
    x = np.asarray(patterns, dtype=np.float64) * mask
    mean = x.sum(axis=(1, 2), keepdims=True) / max(int(mask.sum()), 1)
    return (np.log1p(x / np.maximum(mean, 1e-300)) * mask).astype(np.float32)


def q_channel(n_grid: int) -> np.ndarray:
    """|q| of each pixel in detector pixels / (n_grid / 2): 1 at the middle of an edge."""
    k = np.arange(n_grid) - n_grid // 2
    return (np.hypot(k[None, :], k[:, None]) / (n_grid / 2)).astype(np.float32)


def build_network(n_classes: int, n_grid: int = 64) -> "torch.nn.Module":
    """The CNN (untrained); its architecture depends only on ``n_classes`` (``n_grid`` >= 32)."""
    torch = require_torch("the speckle classifier")
    nn = torch.nn
    if n_grid < 32:
        raise ValueError(f"the speckle CNN needs patterns of at least 32 x 32 pixels, found {n_grid}")

    def block(cin: int, cout: int) -> list:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(2, 8), *block(8, 16), *block(16, 32), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, n_classes))


def _torch_inputs(torch: Any, counts: Any, mask: Any, q: Any) -> Any:
    """:func:`_inputs` in torch, for patterns changed during training (thinned counts)."""
    x = counts * mask
    mean = x.sum(dim=(1, 2), keepdim=True) / mask.sum().clamp(min=1.0)
    x = torch.log1p(x / mean.clamp(min=1e-30)) * mask
    return torch.stack([x, q.expand_as(x)], dim=1)


def _inputs(patterns: np.ndarray, mask: np.ndarray) -> np.ndarray:
    x = preprocess(patterns, mask)
    q = np.broadcast_to(q_channel(x.shape[-1]), x.shape)
    return np.stack([x, q], axis=1)


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    augment: bool = True
    seed: int = 0
    threads: int | None = None  # torch CPU threads while training (1: bit-for-bit repeatable); None: torch's default
    # (low, high) total counts: each training pattern of a batch is thinned binomially to a total drawn
    # log-uniformly in this range (exact for Poisson counts: thinning Poisson(lam) by p gives Poisson(p lam))
    thin_counts: tuple[float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class TrainResult:
    network: Any
    history: dict[str, Any] = field(default_factory=dict)


def train_cnn(patterns: np.ndarray, labels: np.ndarray, mask: np.ndarray, n_classes: int,
              config: TrainConfig | None = None, device: str | None = None) -> TrainResult:
    """Train :func:`build_network` on patterns (n, H, W) with integer labels.  On CPU with ``config.threads=1``
    the same seed gives the same weights bit for bit (multi-threaded reductions may round differently)."""
    torch = require_torch("the speckle classifier")
    config = config or TrainConfig()
    device = device or default_device()
    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(torch, patterns, labels, mask, n_classes, config, device)
    finally:
        torch.set_num_threads(old_threads)


def _train(torch: Any, patterns: np.ndarray, labels: np.ndarray, mask: np.ndarray, n_classes: int,
           config: TrainConfig, device: str) -> TrainResult:
    torch.manual_seed(config.seed)
    net = build_network(n_classes, patterns.shape[-1]).to(device)
    thin = config.thin_counts
    if thin:
        if not np.array_equal(patterns, np.round(patterns)):
            raise ValueError("thin_counts needs patterns of integer counts (simulated with counts, not noiseless)")
        raw = torch.from_numpy(np.asarray(patterns, dtype=np.float32) * mask).to(device)
        mask_t = torch.from_numpy(mask.astype(np.float32)).to(device)
        q_t = torch.from_numpy(q_channel(patterns.shape[-1])).to(device)
        log_lo, log_hi = float(np.log(thin[0])), float(np.log(thin[1]))
    else:
        x = torch.from_numpy(_inputs(patterns, mask)).to(device)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    n = len(y)
    losses = []
    t0 = time.perf_counter()
    net.train()
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=gen).to(device)
        total = 0.0
        for start in range(0, n, config.batch_size):
            idx = order[start:start + config.batch_size]
            if thin:
                cb = raw[idx]
                target = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(len(idx), generator=gen)).to(device)
                p = torch.clamp(target / cb.sum(dim=(1, 2)).clamp(min=1.0), max=1.0)
                cpu_counts = cb.cpu()
                cb = torch.binomial(cpu_counts, p.cpu()[:, None, None].expand_as(cpu_counts), generator=gen).to(device)
                xb = _torch_inputs(torch, cb, mask_t, q_t)
            else:
                xb = x[idx]
            if config.augment:
                # symmetries of an isotropic pattern about pixel n//2: transpose, mirror i -> (n - i) mod n
                flips = torch.randint(0, 2, (2,), generator=gen).tolist()
                if flips[0]:
                    xb = xb.transpose(-1, -2)
                if flips[1]:
                    xb = torch.roll(torch.flip(xb, [-1]), 1, -1)
            loss = torch.nn.functional.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / n)
    net.eval()
    history = {"loss": losses, "train_seconds": time.perf_counter() - t0, "device": device,
               "n_train": n, "config": config.as_dict(), "model": NAME, "model_version": VERSION}
    return TrainResult(network=net, history=history)


def predict_cnn(net: "torch.nn.Module", patterns: np.ndarray, mask: np.ndarray,
                batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class (n,), class probabilities (n, K)) of patterns (n, H, W)."""
    torch = require_torch("the speckle classifier")
    device = next(net.parameters()).device
    x = _inputs(patterns, mask)
    probs = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(x[start:start + batch_size]).to(device)
            probs.append(torch.softmax(net(xb), dim=1).cpu().numpy())
    p = np.concatenate(probs) if probs else np.zeros((0, 0))
    return p.argmax(axis=1), p


# --------------------------------------------------------------------------- radial baseline
def radial_features(patterns: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``log(ring mean of I/<I> + 1e-3)`` in integer-pixel rings 0..n/2 - 1 (rings inside the beam stop dropped).

    The ring mean is taken before the log: the mean of Poisson counts is unbiased at any count
    level, so the features keep their meaning at lower counts (only their noise grows)."""
    from matlake.models.scattering.simulate import radial_profile

    x = np.asarray(patterns, dtype=np.float64) * mask
    x = x / np.maximum(x.sum(axis=(1, 2), keepdims=True) / max(int(mask.sum()), 1), 1e-300)
    keep = radial_profile(mask[None].astype(float), mask)[0] > 0
    return np.log(radial_profile(x, mask)[:, keep] + 1e-3)


def fit_radial_baseline(patterns: np.ndarray, labels: np.ndarray, mask: np.ndarray, seed: int = 0) -> Any:
    """A scikit-learn pipeline (standardise, multinomial logistic regression) on :func:`radial_features`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    model.fit(radial_features(patterns, mask), labels)
    return model


# --------------------------------------------------------------------------- metrics
def confusion(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """Confusion matrix (K, K): rows the true class, columns the predicted one."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)), 1)
    return cm


def evaluate(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> dict[str, Any]:
    """accuracy, per-class accuracy (recall; NaN for a class absent from ``y_true``), macro-F1 (F1 averaged over
    the K classes, 0 for a class never predicted nor present), confusion matrix, chance = 1/K, n."""
    cm = confusion(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        denom = support + predicted
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
    n = int(cm.sum())
    return {"accuracy": float(tp.sum() / n) if n else float("nan"),
            "per_class_accuracy": [float(v) for v in recall],
            "macro_f1": float(f1.mean()),
            "confusion": cm.tolist(),
            "chance": 1.0 / n_classes,
            "n": n}


# --------------------------------------------------------------------------- transfer
def transfer_study(train_spec: Any, test_conditions: dict[str, Any], config: TrainConfig | None = None,
                   device: str | None = None, with_baseline: bool = True) -> dict[str, Any]:
    """Train the CNN (and the radial baseline) on ``build_dataset(train_spec)`` and evaluate on
    ``build_dataset(spec)`` for each named test spec.  Returns ``{"cnn": {condition: metrics},
    "radial": {...}, "history": ..., "network": net}``."""
    from matlake.models.scattering.simulate import build_dataset

    train = build_dataset(train_spec)
    k = len(train.class_values)
    res = train_cnn(train.patterns, train.labels, train.mask, k, config, device)
    baseline = fit_radial_baseline(train.patterns, train.labels, train.mask) if with_baseline else None
    out: dict[str, Any] = {"cnn": {}, "radial": {}, "history": res.history, "network": res.network}
    for name, spec in test_conditions.items():
        ds = build_dataset(spec)
        pred, _ = predict_cnn(res.network, ds.patterns, ds.mask)
        out["cnn"][name] = evaluate(ds.labels, pred, k)
        if baseline is not None:
            out["radial"][name] = evaluate(ds.labels, baseline.predict(radial_features(ds.patterns, ds.mask)), k)
    return out


# --------------------------------------------------------------------------- model module (matlake.platform.modeling)
def series_view_sql(dataset: str) -> str:
    """SQL of the simulated disk series of data set ``dataset`` (one row per density class)."""
    safe = dataset.replace("'", "''")
    return ("select record_id as subject_id, frames_sha256, frames_index_sha256, mask_sha256, mask_index_sha256, "
            "n_frames, height, width, label_json, "
            "cast(json_extract(label_json, '$.class_index') as integer) as class_index "
            "from scattering_series where source_kind = 'simulated' and system = 'disks' "
            f"and json_extract_string(label_json, '$.dataset') = '{safe}' order by class_index, subject_id")


class SpeckleDensityModule(TorchModelModule):
    """The speckle CNN as a model module trained by :func:`matlake.platform.modeling.train`.

    Its view has one row per simulated series (a density class; frames = patterns).
    The frames are arrays in the object store, not columns, so the platform side
    (``modeling.train`` through :meth:`load_arrays`) sets :attr:`frame_reader`, a
    function ``(sha256, index_sha256) -> array`` before training; the module
    itself never touches the lake.  Parameters: ``dataset`` (training data set name),
    ``n_classes``, ``n_grid``, ``class_values`` and the :class:`TrainConfig` fields.
    """

    name = NAME
    version = VERSION
    target = "density_class"
    unit = ""
    subject_table = "scattering_series"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.frame_reader: Any = None

    def load_arrays(self, frame: Any, read: Any) -> Any:
        """The platform's hook (``modeling.train``/``predict``): keep its verified chunk reader."""
        self.frame_reader = read
        return frame

    @property
    def train_sql(self) -> str:  # type: ignore[override]
        return series_view_sql(str(self.params.get("dataset", "train")))

    predict_sql = train_sql

    def build_network(self) -> "torch.nn.Module":
        return build_network(int(self.params["n_classes"]), int(self.params.get("n_grid", 64)))

    def load_patterns(self, frame: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(patterns (n, H, W), labels (n,), mask (H, W)) of the view's series, read through :attr:`frame_reader`."""
        if self.frame_reader is None:
            raise RuntimeError(f"{self.name}: frame_reader is not set (train through classify_lake)")
        pats, labels, mask = [], [], None
        for row in frame.itertuples(index=False):
            arr = np.asarray(self.frame_reader(row.frames_sha256, row.frames_index_sha256), dtype=np.float32)
            m = np.asarray(self.frame_reader(row.mask_sha256, row.mask_index_sha256))
            if mask is None:
                mask = m
            elif not np.array_equal(mask, m):
                raise ValueError("the series of one data set must share one beam-stop mask")
            pats.append(arr)
            labels.append(np.full(len(arr), int(row.class_index)))
        if mask is None:
            raise ValueError(f"{self.name}: the view selected no series")
        return np.concatenate(pats), np.concatenate(labels), mask

    def config(self) -> TrainConfig:
        known = set(TrainConfig.__dataclass_fields__)
        return TrainConfig(**{k: v for k, v in self.params.items() if k in known})

    def fit(self, frame: Any) -> tuple[Any, dict[str, float]]:
        patterns, labels, mask = self.load_patterns(frame)
        k = int(self.params["n_classes"])
        res = train_cnn(patterns, labels, mask, k, self.config(), self.params.get("device"))
        pred, _ = predict_cnn(res.network, patterns, mask)
        m = evaluate(labels, pred, k)
        return res.network, {"train_accuracy": m["accuracy"], "train_macro_f1": m["macro_f1"],
                             "final_loss": res.history["loss"][-1], "n_patterns": float(len(labels)),
                             "train_seconds": res.history["train_seconds"], "chance": m["chance"]}

    def predict(self, artifact: Any, frame: Any) -> Any:
        """One row per series: the majority predicted class of its frames and the fraction of frames agreeing."""
        import pandas as pd

        out = []
        for row in frame.itertuples(index=False):
            arr = np.asarray(self.frame_reader(row.frames_sha256, row.frames_index_sha256), dtype=np.float32)
            mask = np.asarray(self.frame_reader(row.mask_sha256, row.mask_index_sha256))
            pred, _ = predict_cnn(artifact, arr, mask)
            counts = np.bincount(pred, minlength=int(self.params["n_classes"]))
            out.append({"subject_id": row.subject_id, "value": float(counts.argmax()),
                        "uncertainty": float(1 - counts.max() / len(pred))})
        return pd.DataFrame(out, columns=["subject_id", "value", "uncertainty"])
