"""Probe-trajectory recovery from measured ptychographic far-field patterns (issue #12, item 6).

Forward model (far field, known probe ``P``, unknown complex object ``O``)::

    I_j(k) = | F[ P(r) · O(r + r_j) ](k) |²      F = unitary 2D DFT ("ortho")

``r_j`` (row, column, in object pixels = probe pixels) is the scan position of
frame ``j``; the patch of ``O`` starts at ``r_j``.  A fractional position
``r_j = n_j + f_j`` is handled exactly by shifting the *probe* instead of the
object: |F[P(r) O(r + n + f)]| = |F[P(r − f) O(r + n)]| (a shift of the exit
wave is a phase ramp in the far field), and ``P(r − f)`` is a Fourier shift,
differentiable in ``f``.

Recovery alternates, with all frames in one batch:

* object: regularised error reduction: every exit wave is projected onto its
  measured modulus, back-projected (Σ conj(P_j)·ψ'_j) and divided by the summed
  probe intensity Σ|P_j|² (plus ``regularization`` × its maximum, weighting the
  previous object, so unlit pixels keep their value);
* positions, after ``warmup`` iterations and then every ``search_every``: for
  each frame the object is rebuilt from all OTHER frames (leave-one-out, so a
  frame is not matched against its own contribution), the frame's loss is
  evaluated at integer offsets within ±``search_radius`` px, and the best one is
  refined by a parabola through its neighbours (sub-pixel); optional normalised
  gradient steps (``position_lr``) through the differentiable Fourier shift.

Gauge: a common translation of all positions with the object is not
identifiable, so the mean position is held at the mean of the starting guess
(the recovered positions are compared after removing the mean difference).

The probe: the one stored with the tike scan is not exact (at the recorded
positions the object-only loss stays at 2.1, and drops to 0.37 when the probe is
refined too), so by default it is refined with the object from iteration
``probe_from`` (error reduction: Σ conj(O_j)·ψ'_j / Σ|O_j|², each frame's term
shifted back by its fractional position).

Assumptions (recorded with every result): probe known up to that refinement; far-field
(Fraunhofer) geometry with the zero frequency at pixel (0, 0) of each stored
pattern; no background, no partial coherence; positions in probe pixels.

Pure: numpy arrays in, numpy arrays and floats out; torch is imported inside
the functions.  Every random choice takes an explicit seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

NAME = "ptycho-positions"
VERSION = "1"

ASSUMPTIONS = {
    "probe": "known up to refinement: the probe stored with the scan is the start and, from iteration probe_from "
             "on, is refined jointly (a shared probe cannot absorb per-frame position errors); probe_from=-1 "
             "keeps it fixed",
    "geometry": "far field, unitary 2D DFT, zero frequency at pixel (0, 0) of each pattern (unshifted)",
    "noise": "amplitude (sqrt intensity) least squares; no background, full coherence",
    "positions": "row, column of the patch corner in probe pixels; the mean position is fixed (translation gauge)",
}


@dataclass
class PtychoConfig:
    """Settings of :func:`recover_positions` (lengths in probe pixels)."""

    iterations: int = 300           # total iterations (object + positions)
    warmup: int = 20                # object-only iterations first
    position_lr: float = 0.0        # px per normalised gradient step of the positions (0: searches only)
    search_every: int = 5           # iterations between leave-one-out position searches (0: never)
    search_radius: int = 2          # search half-width, px
    search_until: float = 1.0       # fraction of the iterations after which searching stops
    fix_affine: bool = False        # also remove the affine part of each position update (scale/rotation gauge)
    probe_from: int = 10            # refine the probe from this iteration on (-1: keep the given probe fixed)
    regularization: float = 0.05    # object update: weight of the previous object, x max summed |P|^2
    margin: int = 16                # object pixels around the scanned area
    seed: int = 0                   # for the perturbation of the start only (the method itself is deterministic)
    device: str | None = None       # torch device; None: cuda when torch sees a GPU, else cpu

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PtychoResult:
    positions: np.ndarray           # (n, 2) recovered positions, same frame as the input positions, px
    object: np.ndarray              # complex object on the internal grid
    loss_history: list[float]       # amplitude loss per iteration (mean over pixels, counts)
    config: dict[str, Any] = field(default_factory=dict)
    offset: np.ndarray | None = None  # input positions + offset = object-grid positions
    probe: np.ndarray | None = None   # the probe at the end (refined when probe_from >= 0)


def perturb_positions(positions: np.ndarray, sigma_px: float, seed: int) -> np.ndarray:
    """``positions`` plus Gaussian offsets (std ``sigma_px`` per axis) with zero mean over frames."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, sigma_px, size=np.shape(positions))
    return np.asarray(positions, dtype=np.float64) + noise - noise.mean(axis=0)


def position_rmse(found: np.ndarray, reference: np.ndarray, align_mean: bool = True) -> float:
    """Root-mean-square distance (px) between two position sets, after removing the mean
    difference (the translation gauge) when ``align_mean``."""
    err = np.asarray(found, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    if align_mean:
        err = err - err.mean(axis=0)
    return float(np.sqrt((err ** 2).sum(axis=1).mean()))


class _Model:
    """The batched forward model on one device (internal)."""

    def __init__(self, data: np.ndarray, probe: np.ndarray, positions: np.ndarray, margin: int, device: str):
        torch = _torch()
        n0, n1 = probe.shape
        if data.ndim != 3 or data.shape[1:] != probe.shape:
            raise ValueError(f"patterns {data.shape} and probe {probe.shape} disagree")
        if positions.shape != (data.shape[0], 2):
            raise ValueError(f"positions {positions.shape}, expected ({data.shape[0]}, 2)")
        self.torch = torch
        self.dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.n = (n0, n1)
        self.offset = margin - np.floor(positions.min(axis=0))
        grid = positions + self.offset
        self.shape = tuple(int(v) for v in np.ceil(grid.max(axis=0)) + np.array([n0, n1]) + margin + 1)
        self.amp = torch.tensor(np.sqrt(np.asarray(data, dtype=np.float32)), device=self.dev)
        probe_t = torch.tensor(np.asarray(probe, dtype=np.complex64), device=self.dev)
        self.probe_hat = torch.fft.fft2(probe_t)
        self.k0 = torch.fft.fftfreq(n0, device=self.dev)[None, :, None]
        self.k1 = torch.fft.fftfreq(n1, device=self.dev)[None, None, :]
        self.a0 = torch.arange(n0, device=self.dev)
        self.a1 = torch.arange(n1, device=self.dev)
        # Flat object with the mean transmitted amplitude: Σ|P|²·|O|² = mean counts per frame.
        scale = float(np.sqrt(np.asarray(data, dtype=np.float64).sum(axis=(1, 2)).mean()
                              / max((np.abs(probe) ** 2).sum(), 1e-30)))
        self.obj = torch.full(self.shape, scale, dtype=torch.complex64, device=self.dev)

    def indices(self, pos: Any) -> tuple[Any, Any, Any]:
        """Integer corner (clamped inside the object) and fractional part of each position."""
        torch = self.torch
        corner = torch.floor(pos.detach())
        frac = (pos - corner).to(self.k0.dtype)
        corner = corner.long()
        corner[:, 0].clamp_(0, self.shape[0] - self.n[0])
        corner[:, 1].clamp_(0, self.shape[1] - self.n[1])
        return corner, frac, None

    def gather(self, corner: Any) -> tuple[Any, Any]:
        rows = (corner[:, 0, None] + self.a0)[:, :, None].expand(-1, self.n[0], self.n[1])
        cols = (corner[:, 1, None] + self.a1)[:, None, :].expand(-1, self.n[0], self.n[1])
        return rows, cols

    def shifted_probe(self, frac: Any) -> Any:
        """P(r − f) for each frame's fractional position f (Fourier shift)."""
        torch = self.torch
        ramp = torch.exp(-2j * torch.pi * (self.k0 * frac[:, 0, None, None] + self.k1 * frac[:, 1, None, None]))
        return torch.fft.ifft2(self.probe_hat[None] * ramp)

    def farfield(self, obj: Any, pos: Any) -> tuple[Any, Any, Any, Any]:
        corner, frac, _ = self.indices(pos)
        rows, cols = self.gather(corner)
        probe = self.shifted_probe(frac)
        return self.torch.fft.fft2(probe * obj[rows, cols], norm="ortho"), probe, rows, cols

    def preconditioner(self, probe: Any, rows: Any, cols: Any) -> Any:
        torch = self.torch
        illum = torch.zeros(self.shape, device=self.dev)
        illum.index_put_((rows, cols), probe.detach().abs() ** 2, accumulate=True)
        return 1.0 / (illum + 0.05 * illum.max())

    def frame_losses(self, obj: Any, pos: Any) -> Any:
        far, _, _, _ = self.farfield(obj, pos)
        return ((far.abs() - self.amp) ** 2).mean(dim=(1, 2))

    def projections(self, far: Any, probe: Any, rows: Any, cols: Any) -> tuple[Any, Any, Any, Any]:
        """Modulus projection of every exit wave and its back-projection onto the object grid:
        Σ conj(P_j)·ψ'_j and Σ |P_j|² (object-shaped), plus the per-frame terms."""
        torch = self.torch
        phase = far / far.abs().clamp_min(1e-12)
        psi = torch.fft.ifft2(self.amp * phase, norm="ortho")
        contrib = probe.conj() * psi
        weight = probe.abs() ** 2
        num = torch.zeros(self.shape, dtype=contrib.dtype, device=self.dev)
        num.index_put_((rows, cols), contrib, accumulate=True)
        den = torch.zeros(self.shape, dtype=weight.dtype, device=self.dev)
        den.index_put_((rows, cols), weight, accumulate=True)
        return num, den, contrib, weight

    def update_probe(self, obj: Any, pos: Any, far: Any, reg: float) -> None:
        """Probe from the projected exit waves: Σ S_f[conj(O_j)·ψ'_j] / Σ S_f[|O_j|²] (each frame's
        term shifted back by its fractional position), weighting the previous probe by ``reg``."""
        torch = self.torch
        corner, frac, _ = self.indices(pos)
        rows, cols = self.gather(corner)
        patch = obj[rows, cols]
        psi = torch.fft.ifft2(self.amp * far / far.abs().clamp_min(1e-12), norm="ortho")
        back = torch.exp(2j * torch.pi * (self.k0 * frac[:, 0, None, None] + self.k1 * frac[:, 1, None, None]))
        num = torch.fft.ifft2(torch.fft.fft2(patch.conj() * psi) * back).sum(dim=0)
        den = (patch.abs() ** 2).sum(dim=0)
        old = torch.fft.ifft2(self.probe_hat)
        lam = reg * float(den.max())
        self.probe_hat = torch.fft.fft2((num + lam * old) / (den + lam))

    def leave_one_out_search(self, obj: Any, num: Any, den: Any, contrib: Any, weight: Any, reg: float,
                             pos: Any, radius: int) -> Any:
        """Per frame: the object from all OTHER frames (so a frame is not compared with itself), the
        frame's loss at integer offsets within ±radius px, the best one refined to sub-pixel by a
        parabola through its neighbours on each axis."""
        torch = self.torch
        r = torch.arange(-radius, radius + 1, device=self.dev)
        offs = torch.stack(torch.meshgrid(r, r, indexing="ij"), dim=-1).reshape(-1, 2).to(pos.dtype)
        side = 2 * radius + 1
        corner, _, _ = self.indices(pos)
        new = pos.clone()
        n0, n1 = self.n
        for j in range(pos.shape[0]):
            a, b = int(corner[j, 0]), int(corner[j, 1])
            num_j = num.clone()
            den_j = den.clone()
            num_j[a:a + n0, b:b + n1] -= contrib[j]
            den_j[a:a + n0, b:b + n1] -= weight[j]
            others = (num_j + reg * obj) / (den_j.clamp_min(0) + reg)
            far, _, _, _ = self.farfield(others, pos[j][None, :] + offs)
            loss = ((far.abs() - self.amp[j][None]) ** 2).mean(dim=(1, 2)).reshape(side, side).double()
            k = int(torch.argmin(loss))
            i0, i1 = divmod(k, side)
            step = [float(r[i0]), float(r[i1])]
            for axis, (i, line) in enumerate(((i0, loss[:, i1]), (i1, loss[i0, :]))):
                if 0 < i < side - 1:
                    curv = float(line[i - 1] - 2 * line[i] + line[i + 1])
                    if curv > 0:
                        step[axis] += float(np.clip(0.5 * float(line[i - 1] - line[i + 1]) / curv, -0.5, 0.5))
            new[j] = pos[j] + torch.tensor(step, dtype=pos.dtype, device=self.dev)
        return new

    def gradient_step(self, obj: Any, pos: Any, lr: float) -> Any:
        """One normalised gradient step of the positions (object fixed) through the Fourier shift:
        each frame moves by at most ``lr`` px along its own loss gradient."""
        torch = self.torch
        p = pos.detach().clone().requires_grad_(True)
        loss = self.frame_losses(obj, p).sum()
        (g,) = torch.autograd.grad(loss, [p])
        norm = g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return (p - lr * g / norm).detach()


def _gauge_free(step: Any, pos: Any, affine: bool) -> Any:
    """``step`` without its mean (translation gauge) or, with ``affine``, without its best linear map of the
    positions either (scale, rotation, shear of the whole scan: weakly determined, see the module notes)."""
    torch = _torch()
    if not affine:
        return step - step.mean(dim=0)
    x = pos - pos.mean(dim=0)
    design = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
    coef = torch.linalg.lstsq(design, step).solution
    return step - design @ coef


def _torch() -> Any:
    from matlake.optional import require_torch

    return require_torch("ptychographic position recovery")


def simulate_patterns(obj: np.ndarray, probe: np.ndarray, positions: np.ndarray,
                      device: str | None = None) -> np.ndarray:
    """Far-field intensities |F[P(r)·O(r + r_j)]|² (n, H, W) of ``obj`` (complex, indexed from its pixel
    (0, 0)) at ``positions`` (n, 2; row, column px, fractional allowed) with this module's forward model."""
    torch = _torch()
    probe = np.asarray(probe)
    positions = np.asarray(positions, dtype=np.float64)
    dummy = np.zeros((len(positions),) + probe.shape, dtype=np.float32)
    model = _Model(dummy, probe, positions, 0, device)
    model.shape = tuple(int(v) for v in np.shape(obj))  # positions index this object directly (no offset)
    if (np.floor(positions.max(axis=0)) + np.array(probe.shape) > np.array(obj.shape)).any() or positions.min() < 0:
        raise ValueError(f"positions reach outside the object {obj.shape}")
    o = torch.tensor(np.asarray(obj, dtype=np.complex64), device=model.dev)
    with torch.no_grad():
        far, _, _, _ = model.farfield(o, torch.tensor(positions, device=model.dev))
    return (far.abs() ** 2).cpu().numpy()


def reconstruct_object(data: np.ndarray, probe: np.ndarray, positions: np.ndarray, iterations: int = 100,
                       margin: int = 16, device: str | None = None, probe_from: int = -1) -> PtychoResult:
    """Object (and, with ``probe_from`` >= 0, the probe) from patterns at FIXED positions (px); the
    sanity reference: the final loss is lower with the true positions than with wrong ones."""
    cfg = PtychoConfig(iterations=iterations, warmup=iterations, search_every=0, margin=margin, device=device,
                       probe_from=probe_from)
    return recover_positions(data, probe, positions, cfg)


def recover_positions(data: np.ndarray, probe: np.ndarray, start: np.ndarray,
                      config: PtychoConfig | None = None) -> PtychoResult:
    """Scan positions (n, 2; row, column in probe pixels) of the patterns ``data`` (n, H, W; counts,
    zero frequency at [0, 0]) and the object, from the starting guess ``start``.

    The mean position stays that of ``start`` (translation gauge)."""
    cfg = config or PtychoConfig()
    torch = _torch()
    start = np.asarray(start, dtype=np.float64)
    model = _Model(np.asarray(data), np.asarray(probe), start, cfg.margin, cfg.device)
    pos = torch.tensor(start + model.offset, dtype=torch.float64, device=model.dev)
    obj = model.obj.clone()
    history: list[float] = []
    for it in range(cfg.iterations):
        moving = it >= cfg.warmup
        if moving and cfg.position_lr > 0:
            stepped = model.gradient_step(obj, pos, cfg.position_lr)
            pos = pos + _gauge_free(stepped - pos, pos, cfg.fix_affine)
        with torch.no_grad():
            far, probe_f, rows, cols = model.farfield(obj, pos)
            history.append(float(((far.abs() - model.amp) ** 2).mean()))
            num, den, contrib, weight = model.projections(far, probe_f, rows, cols)
            reg = cfg.regularization * float(den.max())
            searching = (moving and cfg.search_every and (it - cfg.warmup) % cfg.search_every == 0
                         and it < cfg.search_until * cfg.iterations)
            if searching:
                found = model.leave_one_out_search(obj, num, den, contrib, weight, reg, pos, cfg.search_radius)
                pos = pos + _gauge_free(found - pos, pos, cfg.fix_affine)
            # regularised error reduction: the average of every frame's projected exit wave / probe
            obj = (num + reg * obj) / (den + reg)
            if 0 <= cfg.probe_from <= it:
                model.update_probe(obj, pos, far, cfg.regularization)
    with torch.no_grad():
        final = pos.cpu().numpy().astype(np.float64) - model.offset
        probe_out = torch.fft.ifft2(model.probe_hat).cpu().numpy()
    return PtychoResult(positions=final, object=obj.detach().cpu().numpy(), loss_history=history,
                        config=dict(cfg.as_dict(), device=str(model.dev)), offset=model.offset, probe=probe_out)
