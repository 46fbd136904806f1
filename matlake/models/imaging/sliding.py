"""Sliding-window ensemble inference over images larger than memory.

The image is any 2D array with ``.shape`` and numpy basic slicing (a
:class:`matlake.arrays.ChunkedArray` frame, a ``np.memmap``, a numpy array), or a
3D one with ``frame`` picking the plane.  Tiles of ``tile`` x ``tile`` pixels on
a regular grid (stride ``tile - overlap``; the last tile of a row/column is
placed at the last multiple of the network's
downsampling that covers the edge, mirror-padded past it) are read one batch at a time, normalised,
run through the ensemble, and their softmax probabilities are accumulated into
the output array the caller gives (a ``np.memmap`` for huge images), so peak
memory is set by the tile batch, not by the image.

Blending: each tile's contribution is weighted by a separable window that is
0 in a ``margin`` band along the tile's *interior* edges (where zero padding
of the convolutions makes predictions unreliable), rises as sin^2 over the
rest of the overlap and is 1 elsewhere; edges on the image border are not
tapered.  Because the windows are products ``w_y(y) w_x(x)`` on a grid, the
total weight at a pixel is ``W_y(y) W_x(x)`` (sums of the 1D windows), so the
output is normalised on the fly without a weight image.  ``2 * margin <=
overlap`` guarantees that every pixel has positive weight.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from matlake.models.imaging.ensemble import EnsembleSpec, choose_device, intensity_range, normalize
from matlake.optional import require_torch

if TYPE_CHECKING:
    import torch


def tile_starts(n: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``0..n`` with at least ``overlap`` overlap.

    Starts are multiples of ``align`` (the network's downsampling factor), so every
    tile sees the pooling grid of the whole image; the stride ``tile - overlap``
    must be a multiple of ``align``.  The last tile may run past ``n`` (the caller
    pads it)."""
    if (tile - overlap) % align:
        raise ValueError(f"tile - overlap ({tile - overlap}) must be a multiple of {align}")
    if n <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, n - tile, stride))
    last = (n - tile) // align * align
    if last > starts[-1]:
        starts.append(last)
    if starts[-1] + tile < n:  # aligning left a few pixels uncovered
        starts.append(starts[-1] + stride)
    return starts


def window_1d(tile: int, overlap: int, margin: int, taper_start: bool, taper_end: bool) -> np.ndarray:
    """The 1D blending weights of one tile (float64, length ``tile``)."""
    w = np.ones(tile)
    ramp_len = overlap - 2 * margin
    k = np.arange(ramp_len)
    ramp = np.sin(0.5 * np.pi * (k + 0.5) / ramp_len) ** 2 if ramp_len > 0 else np.zeros(0)
    if taper_start:
        w[:margin] = 0.0
        w[margin:margin + ramp_len] = ramp
    if taper_end:
        w[tile - margin:] = 0.0
        w[tile - margin - ramp_len:tile - margin] = ramp[::-1]
    return w


def _axis_windows(n: int, tile: int, overlap: int, margin: int, align: int) -> tuple[list[int], list[np.ndarray], np.ndarray]:
    """Tile starts along one axis, each tile's window clipped to the image, and the summed weights."""
    starts = tile_starts(n, tile, overlap, align)
    wins, total = [], np.zeros(n)
    for s in starts:
        size = min(tile, n - s)
        w = window_1d(tile, overlap, margin, taper_start=s > 0, taper_end=s + tile < n)[:size]
        wins.append(w)
        total[s:s + size] += w
    if (total <= 0).any():
        raise ValueError(f"tiles leave pixels without weight: need 2 * margin ({margin}) <= overlap ({overlap})")
    return starts, wins, total


def _read_tile(array: Any, frame: int | None, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    t = array[frame, y0:y1, x0:x1] if frame is not None else array[y0:y1, x0:x1]
    return np.asarray(t)


class _Frame2D:
    """A 2D view (``.shape``, slicing) of one plane of a 3D lazy array, for :func:`intensity_range`."""

    def __init__(self, array: Any, frame: int) -> None:
        self.array, self.frame = array, frame
        self.shape = tuple(array.shape[-2:])

    def __getitem__(self, key):
        ys, xs = key
        return np.asarray(self.array[self.frame, ys, xs])


def sliding_window(net: "torch.nn.Module", array: Any, out: np.ndarray, *, tile: int = 256, overlap: int = 64,
                   margin: int | None = None, batch_size: int = 4, members: bool = False,
                   frame: int | None = None, intensity: tuple[float, float] | None = None,
                   device: str | None = None) -> np.ndarray:
    """Ensemble softmax probabilities of a (lazy) 2D image, written into ``out``.

    ``out``: float array of shape ``(C, H, W)`` (mean over members) or, with
    ``members=True``, ``(M, C, H, W)``; overwritten.  ``tile`` must be a multiple
    of the network's downsampling (``2**(depth-1)``); tiles start at multiples of it
    (so ``tile - overlap`` must be one too), and tiles running past the image edge
    (or images smaller than a tile) are mirror-padded.  ``margin`` (default ``overlap // 4``) is the band along
    interior tile edges given zero weight.  ``intensity`` = (lo, hi) overrides the
    per-image percentile normalisation (:func:`intensity_range` on the lazy
    image, as in training).  Returns ``out``.
    """
    torch = require_torch("sliding-window inference")
    spec: EnsembleSpec = net.spec
    mult = 2 ** (spec.depth - 1)
    if tile % mult:
        raise ValueError(f"tile must be a multiple of {mult}, found {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"need 0 <= overlap < tile, found overlap {overlap}, tile {tile}")
    margin = overlap // 4 if margin is None else margin
    shape = tuple(array.shape)
    if frame is None and len(shape) != 2:
        raise ValueError(f"expected a 2D image (or give frame= for a stack), found shape {shape}")
    h, w = shape[-2:]
    n_m, n_c = len(spec.members), spec.n_classes
    want = (n_m, n_c, h, w) if members else (n_c, h, w)
    if tuple(out.shape) != want:
        raise ValueError(f"out must have shape {want}, found {tuple(out.shape)}")
    if intensity is None:
        view = array if frame is None else _Frame2D(array, frame)
        intensity = intensity_range(view, spec.norm_low, spec.norm_high)
    lo, hi = intensity
    ys, wys, ty = _axis_windows(h, tile, overlap, margin, mult)
    xs, wxs, tx = _axis_windows(w, tile, overlap, margin, mult)
    # zero the output band by band (a memmap is never loaded whole)
    band = max(1, (1 << 24) // max(1, out[..., :1, :].size))
    for y0 in range(0, h, band):
        out[..., y0:y0 + band, :] = 0
    device = choose_device(device)
    net.to(device).eval()

    def tiles() -> Iterator[tuple[int, int]]:
        for i in range(len(ys)):
            for j in range(len(xs)):
                yield i, j

    order = list(tiles())
    with torch.no_grad():
        for b0 in range(0, len(order), batch_size):
            chunk = order[b0:b0 + batch_size]
            xb = np.empty((len(chunk), 1, tile, tile), np.float32)
            for k, (i, j) in enumerate(chunk):
                y0, x0 = ys[i], xs[j]
                y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
                t = normalize(_read_tile(array, frame, y0, y1, x0, x1), lo, hi)
                if t.shape != (tile, tile):  # past the image edge (or a small image): mirror it
                    t = np.pad(t, ((0, tile - t.shape[0]), (0, tile - t.shape[1])), mode="symmetric")
                xb[k, 0] = t
            p = torch.softmax(net(torch.from_numpy(xb).to(device)), 2)
            if not members:
                p = p.mean(1)
            p = p.cpu().numpy()
            for k, (i, j) in enumerate(chunk):
                y0, x0 = ys[i], xs[j]
                th, tw = len(wys[i]), len(wxs[j])
                wgt = (wys[i] / ty[y0:y0 + th])[:, None] * (wxs[j] / tx[x0:x0 + tw])[None, :]
                out[..., y0:y0 + th, x0:x0 + tw] += (p[k][..., :th, :tw] * wgt).astype(out.dtype, copy=False)
    return out
