"""PNG figures of the speckle study (matplotlib, Agg backend; pure: arrays in, PNG bytes out)."""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np


def _figure(w: float, h: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot state: safe in threads and workers

    return Figure(figsize=(w, h), dpi=100)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def confusion_png(confusion: Sequence[Sequence[int]], class_names: Sequence[str], title: str = "") -> bytes:
    """Confusion matrix (rows true, columns predicted) with counts and row fractions, as PNG bytes."""
    cm = np.asarray(confusion, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(class_names)
    fig = _figure(1.2 + 0.9 * k, 1.0 + 0.8 * k)
    ax = fig.add_subplot(111)
    im = ax.imshow(frac, vmin=0, vmax=1, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                    color="white" if frac[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label="fraction of true class")
    return _png(fig)


def examples_png(patterns: np.ndarray, labels: np.ndarray, mask: np.ndarray, class_names: Sequence[str],
                 per_class: int = 3) -> bytes:
    """``per_class`` example patterns of each class, log(1 + counts), beam stop blank; PNG bytes."""
    k = len(class_names)
    fig = _figure(1.8 * per_class, 1.8 * k)
    for c in range(k):
        idx = np.flatnonzero(labels == c)[:per_class]
        for j in range(per_class):
            ax = fig.add_subplot(k, per_class, c * per_class + j + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(idx):
                img = np.ma.masked_where(mask == 0, np.log1p(patterns[idx[j]]))
                ax.imshow(img, cmap="magma")
            if j == 0:
                ax.set_ylabel(class_names[c], fontsize=8)
    fig.suptitle("log(1 + counts)", fontsize=9)
    return _png(fig)
