"""Deep ensembles of U-nets for micrograph segmentation: EA and ER.

``EA``  one ensemble whose members have *different* encoder families (at least 3);
``ER``  M randomly initialised copies (different seeds) of one encoder family.

An :class:`EnsembleSpec` holds everything that defines the ensemble and its
training (members as ``(encoder, seed)``, architecture, epochs, learning rate,
batch, tile size, augmentation, intensity normalisation) and is stored as JSON
with the model version; :func:`build_ensemble` rebuilds the untrained network
from it, so the artifact is just ONE state dict of :class:`EnsembleNet`
(:func:`matlake.models.base.torch_state_dumps`), which holds the members in an
``nn.ModuleList``.

Training (:func:`train_ensemble`) draws random tiles (``tile`` x ``tile``
pixels) from the training images with random flips and 90-degree rotations,
and trains each member with its own seed (python ``random``, numpy, torch;
``torch.use_deterministic_algorithms`` on), so a second run on the same device
gives bitwise identical weights.  The device is CUDA when available, else CPU,
and is recorded in the history.

Intensities are normalised per image from percentiles (``norm_low``,
``norm_high``; :func:`intensity_range`), the same function at train and predict
time, so a prediction sees what training saw.  Masks hold class *indices*
``0 .. n_classes-1`` (the platform maps stored class values to indices).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from matlake.models.imaging.unet import ENCODERS, UNetConfig, build_unet, padded_size
from matlake.optional import require_torch

if TYPE_CHECKING:
    import torch

KINDS = ("EA", "ER")


@dataclass
class EnsembleSpec:
    """An ensemble and how it is trained; JSON round-trips exactly (:meth:`to_json`, :meth:`from_json`).

    ``members``: ``[(encoder, seed), ...]``; ``tile``: training tile side (pixels,
    a multiple of ``2**(depth-1)``); ``steps_per_epoch``: optimiser steps (each one
    batch of ``batch`` random tiles) per epoch; ``lr``: Adam learning rate;
    ``norm_low``/``norm_high``: intensity percentiles mapped to -1 / +1.
    """

    kind: str
    members: list[tuple[str, int]]
    class_names: list[str] = field(default_factory=lambda: ["background", "foreground"])
    in_channels: int = 1
    depth: int = 3
    base: int = 16
    epochs: int = 4
    steps_per_epoch: int = 50
    batch: int = 8
    lr: float = 3e-3
    tile: int = 64
    augment: bool = True
    norm_low: float = 1.0
    norm_high: float = 99.0

    def __post_init__(self) -> None:
        self.members = [(str(e), int(s)) for e, s in self.members]
        if self.kind not in KINDS:
            raise ValueError(f"ensemble kind must be one of {KINDS}, found {self.kind!r}")
        if not self.members:
            raise ValueError("an ensemble needs at least one member")
        encoders = [e for e, _ in self.members]
        for e in encoders:
            if e not in ENCODERS:
                raise ValueError(f"member encoder must be one of {ENCODERS}, found {e!r}")
        if self.kind == "EA" and len(set(encoders)) < 3:
            raise ValueError(f"an EA ensemble needs at least 3 different encoder families, found {sorted(set(encoders))}")
        if self.kind == "ER":
            if len(set(encoders)) != 1:
                raise ValueError(f"an ER ensemble has one encoder family, found {sorted(set(encoders))}")
            if len({s for _, s in self.members}) != len(self.members):
                raise ValueError("ER members need distinct seeds")
        if len(self.class_names) < 2:
            raise ValueError(f"need at least 2 classes, found {self.class_names}")
        if self.tile % (2 ** (self.depth - 1)):
            raise ValueError(f"tile must be a multiple of {2 ** (self.depth - 1)} for depth {self.depth}, found {self.tile}")
        if not 0 <= self.norm_low < self.norm_high <= 100:
            raise ValueError(f"need 0 <= norm_low < norm_high <= 100, found {self.norm_low}, {self.norm_high}")

    @classmethod
    def ea(cls, encoders: Sequence[str] = ("plain", "resnet", "mobilenet"), seed: int = 0, **kw: Any) -> "EnsembleSpec":
        """EA: one member per encoder family, seeds ``seed, seed+1, ...``."""
        return cls(kind="EA", members=[(e, seed + i) for i, e in enumerate(encoders)], **kw)

    @classmethod
    def er(cls, encoder: str = "plain", n_members: int = 3, seed: int = 0, **kw: Any) -> "EnsembleSpec":
        """ER: ``n_members`` copies of one family, seeds ``seed, seed+1, ...``."""
        return cls(kind="ER", members=[(encoder, seed + i) for i in range(n_members)], **kw)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def member_config(self, i: int) -> UNetConfig:
        return UNetConfig(encoder=self.members[i][0], in_channels=self.in_channels, n_classes=self.n_classes,
                          depth=self.depth, base=self.base)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["members"] = [[e, s] for e, s in self.members]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EnsembleSpec":
        known = set(cls.__dataclass_fields__)
        extra = sorted(set(d) - known)
        if extra:
            raise ValueError(f"unknown ensemble spec fields {extra} (known: {sorted(known)})")
        return cls(**{**d, "members": [tuple(m) for m in d["members"]]})

    @classmethod
    def from_json(cls, text: str) -> "EnsembleSpec":
        return cls.from_dict(json.loads(text))


def _ensemble_class():
    torch = require_torch("U-net ensembles")

    class EnsembleNet(torch.nn.Module):
        """The members of an ensemble in one module: ``forward(x) -> (B, M, C, H, W)`` logits."""

        def __init__(self, spec: EnsembleSpec) -> None:
            super().__init__()
            self.spec = spec
            nets = []
            for i, (_, seed) in enumerate(spec.members):
                torch.manual_seed(seed)  # each member's init comes from its own seed
                nets.append(build_unet(spec.member_config(i)))
            self.members = torch.nn.ModuleList(nets)

        def forward(self, x):
            return torch.stack([m(x) for m in self.members], 1)

    return EnsembleNet


def build_ensemble(spec: EnsembleSpec) -> "torch.nn.Module":
    """The untrained :class:`EnsembleNet` of ``spec`` (members initialised from their seeds)."""
    return _ensemble_class()(spec)


def choose_device(device: str | None = None) -> str:
    """``device`` if given, else ``"cuda"`` when torch sees a GPU, else ``"cpu"``."""
    if device:
        return device
    torch = require_torch("U-net ensembles")
    return "cuda" if torch.cuda.is_available() else "cpu"


# ----------------------------------------------------------------------------- intensity normalisation

def _subsample(array: Any, max_pixels: int) -> np.ndarray:
    """Every k-th row and column of a 2D (lazy) array so that at most ~``max_pixels`` are kept,
    read in bands of rows so that a huge image is never in memory at once."""
    h, w = array.shape[-2:]
    step = max(1, math.ceil(math.sqrt(h * w / max_pixels)))
    if step == 1:
        return np.asarray(array[:, :], dtype=np.float64)
    band = max(step, (1 << 22) // max(w, 1) // step * step)  # ~4M pixels per band read
    parts = []
    for y0 in range(0, h, band):
        parts.append(np.asarray(array[y0:min(h, y0 + band), :])[::step, ::step])
    return np.concatenate(parts).astype(np.float64)


def intensity_range(array: Any, low: float = 1.0, high: float = 99.0, max_pixels: int = 1 << 20) -> tuple[float, float]:
    """The ``low`` and ``high`` intensity percentiles of a 2D image (numpy or lazy with slicing),
    from every pixel up to ``max_pixels`` and a regular subsample beyond; NaNs ignored."""
    sub = _subsample(array, max_pixels)
    lo, hi = np.nanpercentile(sub, [low, high])
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ValueError("image has no finite pixels")
    if hi <= lo:  # a flat image: avoid dividing by zero, keep it at 0
        hi = lo + 1.0
    return float(lo), float(hi)


def normalize(tile: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Intensities mapped so that ``lo -> -1`` and ``hi -> +1`` (float32; NaN -> 0)."""
    out = (np.asarray(tile, dtype=np.float32) - np.float32(lo)) * np.float32(2.0 / (hi - lo)) - np.float32(1.0)
    return np.nan_to_num(out, nan=0.0, copy=False)


# ----------------------------------------------------------------------------- training

@contextmanager
def deterministic(seed: int, device: str) -> Iterator[None]:
    """Seed python, numpy and torch and turn on deterministic torch algorithms; restores the flag after."""
    torch = require_torch("U-net ensembles")
    if device.startswith("cuda"):
        # cuBLAS needs a fixed workspace to be deterministic; must be set before its first use
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    was = torch.are_deterministic_algorithms_enabled()
    was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    bench = torch.backends.cudnn.benchmark
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=device.startswith("cuda"))
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=was_warn)
        torch.backends.cudnn.benchmark = bench


def _augment(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    x, y = np.rot90(x, k), np.rot90(y, k)
    if flip:
        x, y = x[:, ::-1], y[:, ::-1]
    return x, y


def _prepare(images: Sequence[Any], masks: Sequence[Any], spec: EnsembleSpec) -> list[tuple[np.ndarray, np.ndarray]]:
    """Normalised float32 images and int64 masks, reflect-padded to at least one tile."""
    if len(images) != len(masks) or not images:
        raise ValueError(f"need as many masks as images (at least one), found {len(images)} images, {len(masks)} masks")
    out = []
    for i, (img, msk) in enumerate(zip(images, masks)):
        img = np.asarray(img)
        msk = np.asarray(msk)
        if img.shape[-2:] != msk.shape[-2:] or img.ndim != 2:
            raise ValueError(f"training pair {i}: field shape: expected a 2D image and a mask of its shape, "
                             f"found {img.shape} and {msk.shape}")
        if msk.min() < 0 or msk.max() >= spec.n_classes:
            raise ValueError(f"training pair {i}: field mask: expected class indices 0..{spec.n_classes - 1}, "
                             f"found {msk.min()}..{msk.max()}")
        lo, hi = intensity_range(img, spec.norm_low, spec.norm_high)
        x = normalize(img, lo, hi)
        ph, pw = max(0, spec.tile - x.shape[0]), max(0, spec.tile - x.shape[1])
        if ph or pw:
            x = np.pad(x, ((0, ph), (0, pw)), mode="reflect")
            msk = np.pad(msk, ((0, ph), (0, pw)), mode="reflect")
        out.append((x, msk.astype(np.int64)))
    return out


def _batch(rng: np.random.Generator, data: list[tuple[np.ndarray, np.ndarray]], spec: EnsembleSpec,
           weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = spec.tile
    xs = np.empty((spec.batch, 1, t, t), np.float32)
    ys = np.empty((spec.batch, t, t), np.int64)
    for b in range(spec.batch):
        x, y = data[int(rng.choice(len(data), p=weights))]
        y0 = int(rng.integers(x.shape[0] - t + 1))
        x0 = int(rng.integers(x.shape[1] - t + 1))
        tx, ty = x[y0:y0 + t, x0:x0 + t], y[y0:y0 + t, x0:x0 + t]
        if spec.augment:
            tx, ty = _augment(rng, tx, ty)
        xs[b, 0], ys[b] = tx, ty
    return xs, ys


def train_ensemble(images: Sequence[Any], masks: Sequence[Any], spec: EnsembleSpec,
                   device: str | None = None) -> tuple["torch.nn.Module", dict[str, Any]]:
    """Train every member of ``spec`` on random augmented tiles of (image, mask) pairs.

    ``images``: 2D arrays (any dtype); ``masks``: class indices of the same shapes.
    Returns the :class:`EnsembleNet` (on CPU, eval mode) and a history: device,
    torch version, per member its seed, mean cross-entropy loss per epoch and
    training seconds.  Tiles are drawn with probability proportional to image area.
    """
    torch = require_torch("U-net ensembles")
    device = choose_device(device)
    data = _prepare(images, masks, spec)
    areas = np.array([x.size for x, _ in data], np.float64)
    weights = areas / areas.sum()
    net = build_ensemble(spec)
    history: dict[str, Any] = {"device": device, "torch": torch.__version__, "members": []}
    for i, (encoder, seed) in enumerate(spec.members):
        member = net.members[i]
        t0 = time.perf_counter()
        with deterministic(seed, device):
            rng = np.random.default_rng(seed)
            member.to(device).train()
            opt = torch.optim.Adam(member.parameters(), lr=spec.lr)
            losses = []
            for _ in range(spec.epochs):
                total = 0.0
                for _ in range(spec.steps_per_epoch):
                    xb, yb = _batch(rng, data, spec, weights)
                    xt = torch.from_numpy(xb).to(device)
                    yt = torch.from_numpy(yb).to(device)
                    opt.zero_grad(set_to_none=True)
                    loss = torch.nn.functional.cross_entropy(member(xt), yt)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach())
                losses.append(total / spec.steps_per_epoch)
            member.to("cpu").eval()
        history["members"].append({"encoder": encoder, "seed": seed, "loss": losses,
                                   "seconds": time.perf_counter() - t0})
    net.eval()
    return net, history


# ----------------------------------------------------------------------------- inference on an image that fits

def member_probabilities(net: "torch.nn.Module", image: Any, device: str | None = None,
                         intensity: tuple[float, float] | None = None) -> np.ndarray:
    """Softmax probabilities of every member for a whole 2D image in one forward pass:
    ``(M, C, H, W)`` float32.  The image is normalised as in training (``intensity``
    = (lo, hi) overrides the per-image percentiles) and mirror-padded to a multiple
    of the network's downsampling.  For images too large for one pass use
    :func:`matlake.models.imaging.sliding.sliding_window`."""
    torch = require_torch("U-net ensembles")
    spec: EnsembleSpec = net.spec
    img = np.asarray(image)
    lo, hi = intensity or intensity_range(img, spec.norm_low, spec.norm_high)
    x = normalize(img, lo, hi)
    h, w = x.shape
    m = 2 ** (spec.depth - 1)
    x = np.pad(x, ((0, padded_size(h, m) - h), (0, padded_size(w, m) - w)), mode="symmetric")
    device = choose_device(device)
    net.to(device).eval()
    with torch.no_grad():
        logits = net(torch.from_numpy(np.ascontiguousarray(x))[None, None].to(device))[0]
        p = torch.softmax(logits, 1)[:, :, :h, :w]
    return p.cpu().numpy()
