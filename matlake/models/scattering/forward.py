"""Differentiable far-field forward model of coherent scattering (torch), with numpy references.

The kinematic (Born) far field of an illuminated object is

    A(q) = sum_r rho(r) * P(r) * exp(-i q . r),      I(q) = |A(q)|^2

with rho the scattering density (real or complex), P the probe amplitude and q the
momentum transfer.  Two variants:

* **grid**: rho sampled on a pixel grid; A on the discrete Fourier grid is one FFT
  (:func:`grid_intensity`, optionally zero-padded by ``oversample`` so the speckle is
  sampled at or beyond Nyquist), and at arbitrary q vectors a direct sum
  (:func:`direct_intensity`).
* **point cloud**: spheres (3D) or disks (2D) of radius R_j at positions r_j, each
  scattering with its analytic form factor times its volume (area),
  A(q) = sum_j c_j V_j F(q R_j) P(r_j) exp(-i q . r_j) with
  F_sphere(x) = 3 (sin x - x cos x) / x^3 and F_disk(x) = 2 J1(x) / x
  (:func:`pointcloud_intensity`).

Units: positions and radii in one length unit (pixels, nm, ...), q in radians per
that unit, so q . r is dimensionless; intensities are in (density x volume)^2, i.e.
arbitrary until :func:`poisson_counts` scales them to expected counts.

Everything except Poisson sampling is differentiable; ``direct_intensity_numpy`` and
``pointcloud_intensity_numpy`` are explicit-loop numpy references used by the tests.
Torch is imported inside functions (and through :func:`matlake.optional.require_torch`),
so importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from matlake.optional import require_torch

if TYPE_CHECKING:
    import torch

__all__ = [
    "FORWARD_VERSION",
    "gaussian_probe",
    "beamstop_mask",
    "grid_q",
    "grid_intensity",
    "direct_intensity",
    "sphere_form_factor",
    "disk_form_factor",
    "pointcloud_intensity",
    "poisson_counts",
    "direct_intensity_numpy",
    "grid_intensity_numpy",
    "pointcloud_intensity_numpy",
]

FORWARD_VERSION = "1"

# Below these |x| the closed forms lose digits to cancellation (sin x - x cos x ~ x^3/3)
# or divide 0/0, so a Taylor series takes over; the first omitted term is < 1e-16 there.
_SPHERE_SERIES_X = 0.05
_DISK_SERIES_X = 0.01
_BESSEL_QUAD_X = 25.0
_BESSEL_QUAD_N = 96


def _torch() -> Any:
    return require_torch("the scattering forward model")


# --------------------------------------------------------------------------- probe, mask, q grid


def gaussian_probe(shape: Sequence[int], sigma: float, center: Sequence[float] | None = None, *,
                   dtype: Any = None, device: Any = None) -> "torch.Tensor":
    """Gaussian probe amplitude exp(-|r - c|^2 / (2 sigma^2)) on a ``shape`` pixel grid.

    ``sigma`` is in pixels (the intensity profile then has standard deviation
    sigma / sqrt(2)); ``center`` (pixels, (y, x)) defaults to the grid centre
    ((H - 1) / 2, (W - 1) / 2).  ``sigma = inf`` gives a flat (plane-wave) probe.
    """
    torch = _torch()
    dtype = dtype or torch.get_default_dtype()
    h, w = int(shape[0]), int(shape[1])
    cy, cx = ((h - 1) / 2.0, (w - 1) / 2.0) if center is None else (float(center[0]), float(center[1]))
    y = torch.arange(h, dtype=dtype, device=device)[:, None] - cy
    x = torch.arange(w, dtype=dtype, device=device)[None, :] - cx
    if not np.isfinite(sigma):
        return torch.ones((h, w), dtype=dtype, device=device)
    if sigma <= 0:
        raise ValueError(f"sigma: expected a positive probe width in pixels, found {sigma}")
    return torch.exp(-(y * y + x * x) / (2.0 * float(sigma) ** 2))


def beamstop_mask(shape: Sequence[int], radius: float, center: Sequence[float] | None = None, *,
                  dtype: Any = None, device: Any = None) -> "torch.Tensor":
    """Detector mask of a round beam stop: 1 = valid pixel, 0 = behind the stop.

    ``radius`` in detector pixels; ``center`` (y, x) defaults to the pixel where
    q = 0 lands on an fft-shifted grid, (H // 2, W // 2).
    """
    torch = _torch()
    dtype = dtype or torch.get_default_dtype()
    h, w = int(shape[0]), int(shape[1])
    cy, cx = (h // 2, w // 2) if center is None else (float(center[0]), float(center[1]))
    y = torch.arange(h, dtype=dtype, device=device)[:, None] - cy
    x = torch.arange(w, dtype=dtype, device=device)[None, :] - cx
    return ((y * y + x * x) > float(radius) ** 2).to(dtype)


def grid_q(shape: Sequence[int], pixel_size: float = 1.0, oversample: int = 1,
           shift: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(qy, qx) of the detector grid that :func:`grid_intensity` returns, in radians
    per the unit of ``pixel_size`` (the real-space pixel pitch).

    The padded grid has M = H * oversample rows; row k holds q_y = 2 pi k / (M a),
    k from -M//2 to M - M//2 - 1 when ``shift`` (q = 0 at index M // 2), else the
    FFT order 0, 1, ..., -1.
    """
    out = []
    for n in shape[:2]:
        m = int(n) * int(oversample)
        k = np.fft.fftfreq(m) * m
        if shift:
            k = np.fft.fftshift(k)
        out.append(2.0 * np.pi * k / (m * float(pixel_size)))
    return out[0], out[1]


# --------------------------------------------------------------------------- grid variant


def grid_intensity(rho: "torch.Tensor", probe: "torch.Tensor | None" = None, *, oversample: int = 1,
                   mask: "torch.Tensor | None" = None, shift: bool = True) -> "torch.Tensor":
    """Far-field intensity |FFT(rho * probe)|^2 of densities on a pixel grid.

    ``rho``: (..., H, W), real or complex (leading dimensions are batch/time);
    ``probe``: (H, W) amplitude (real or complex), broadcast over the batch;
    ``oversample``: zero-pad to (H * o, W * o) before the transform (o >= 2 samples
    the speckle at Nyquist); ``mask``: detector mask of the output shape, multiplied
    in (1 = valid); ``shift``: put q = 0 at the centre (index M // 2).
    Returns a real tensor (..., H * o, W * o); the q of each pixel is :func:`grid_q`.
    Pixel (ky, kx) equals the direct sum over pixel positions (y, x) of
    rho * probe * exp(-i (qy y + qx x)) at those q (the grid origin is pixel (0, 0)).
    """
    torch = _torch()
    field = rho if probe is None else rho * probe
    h, w = field.shape[-2], field.shape[-1]
    o = int(oversample)
    if o < 1:
        raise ValueError(f"oversample: expected an integer >= 1, found {oversample}")
    amp = torch.fft.fft2(field, s=(h * o, w * o))
    if shift:
        amp = torch.fft.fftshift(amp, dim=(-2, -1))
    intensity = amp.real ** 2 + amp.imag ** 2
    if mask is not None:
        intensity = intensity * mask
    return intensity


def direct_intensity(amplitudes: "torch.Tensor", positions: "torch.Tensor", q: "torch.Tensor") -> "torch.Tensor":
    """|sum_j a_j exp(-i q . r_j)|^2 at arbitrary q vectors, by direct summation.

    ``amplitudes``: (..., N) real or complex scattering amplitudes a_j (density x probe
    x volume x form factor as the caller wants); ``positions``: (N, d) in a length
    unit; ``q``: (M, d) in radians per that unit.  Returns (..., M).  Cost O(N M):
    meant for few q or few scatterers (fitting, checks), the FFT for full grids.
    """
    torch = _torch()
    phase = q @ positions.transpose(0, 1)  # (M, N), dimensionless
    a = amplitudes.unsqueeze(-2)  # (..., 1, N)
    if torch.is_complex(a):
        re = (a.real * torch.cos(phase) + a.imag * torch.sin(phase)).sum(-1)
        im = (a.imag * torch.cos(phase) - a.real * torch.sin(phase)).sum(-1)
    else:
        re = (a * torch.cos(phase)).sum(-1)
        im = -(a * torch.sin(phase)).sum(-1)
    return re * re + im * im


# --------------------------------------------------------------------------- form factors


def sphere_form_factor(x: "torch.Tensor") -> "torch.Tensor":
    """Normalised form factor of a homogeneous sphere, F(x) = 3 (sin x - x cos x) / x^3,
    x = q R (F(0) = 1); a Taylor series near 0 keeps value and gradient exact there."""
    torch = _torch()
    small = x.abs() < _SPHERE_SERIES_X
    # Evaluate the closed form only where it is safe, so its gradient never sees 0/0.
    xs = torch.where(small, torch.ones_like(x), x)
    closed = 3.0 * (torch.sin(xs) - xs * torch.cos(xs)) / xs ** 3
    x2 = x * x
    series = 1.0 - x2 / 10.0 + x2 * x2 / 280.0 - x2 * x2 * x2 / 15120.0
    return torch.where(small, series, closed)


def _bessel_jn(n: int, x: "torch.Tensor") -> "torch.Tensor":
    """J_n(x) to double precision for any real x.

    torch.special.bessel_j0/j1 are off by up to ~5e-7 for 5 < x < 8 (torch 2.13), too
    coarse for a 1e-6 forward model, but exact to ~1e-15 beyond x = 25 (their
    asymptotic branch).  Below, Bessel's integral J_n(x) = (1/2 pi) int_0^{2 pi}
    cos(n t - x sin t) dt is evaluated with the trapezoid rule, which for this periodic
    integrand errs only by the aliased terms J_{n +- kN}(x): < 1e-20 for N = 96, |x| <= 25.
    """
    torch = _torch()
    big = x.abs() > _BESSEL_QUAD_X
    xs = torch.clamp(x, -_BESSEL_QUAD_X, _BESSEL_QUAD_X)
    acc = torch.zeros_like(xs)
    for k in range(_BESSEL_QUAD_N):
        t = 2.0 * np.pi * k / _BESSEL_QUAD_N
        acc = acc + torch.cos(n * t - xs * np.sin(t))
    quad = acc / _BESSEL_QUAD_N
    if n == 1:
        far = torch.special.bessel_j1(x)
    elif n == 2:
        xb = torch.where(big, x, torch.full_like(x, 2 * _BESSEL_QUAD_X))
        far = 2.0 * torch.special.bessel_j1(xb) / xb - torch.special.bessel_j0(xb)
    else:
        raise ValueError(f"n: expected 1 or 2, found {n}")
    return torch.where(big, far, quad)


def _disk_function() -> Any:
    """torch.autograd.Function for 2 J1(x) / x (torch's bessel_j1 has no derivative)."""
    torch = _torch()

    def value(x: "torch.Tensor") -> "torch.Tensor":
        small = x.abs() < _DISK_SERIES_X
        xs = torch.where(small, torch.ones_like(x), x)
        closed = 2.0 * _bessel_jn(1, xs) / xs
        x2 = x * x
        series = 1.0 - x2 / 8.0 + x2 * x2 / 192.0 - x2 * x2 * x2 / 9216.0
        return torch.where(small, series, closed)

    def slope(x: "torch.Tensor") -> "torch.Tensor":
        # d/dx [2 J1(x)/x] = -2 J2(x) / x
        small = x.abs() < _DISK_SERIES_X
        xs = torch.where(small, torch.ones_like(x), x)
        closed = -2.0 * _bessel_jn(2, xs) / xs
        x2 = x * x
        series = -x / 4.0 + x * x2 / 48.0 - x * x2 * x2 / 1536.0
        return torch.where(small, series, closed)

    class DiskFormFactor(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: "torch.Tensor") -> "torch.Tensor":
            ctx.save_for_backward(x)
            return value(x)

        @staticmethod
        def backward(ctx: Any, grad: "torch.Tensor") -> "torch.Tensor":
            (x,) = ctx.saved_tensors
            return grad * slope(x)

    return DiskFormFactor


_DISK_FN: Any = None


def disk_form_factor(x: "torch.Tensor") -> "torch.Tensor":
    """Normalised form factor of a uniform disk in 2D, F(x) = 2 J1(x) / x, x = q R (F(0) = 1)."""
    global _DISK_FN
    if _DISK_FN is None:
        _DISK_FN = _disk_function()
    return _DISK_FN.apply(x)


# --------------------------------------------------------------------------- point-cloud variant


def pointcloud_intensity(positions: "torch.Tensor", radii: "torch.Tensor", q: "torch.Tensor", *,
                         kind: str = "sphere", contrast: "torch.Tensor | float" = 1.0,
                         probe_sigma: float | None = None,
                         probe_center: "torch.Tensor | Sequence[float] | None" = None) -> "torch.Tensor":
    """Coherent intensity of spheres (``kind='sphere'``, d = 3) or disks (``'disk'``, d = 2).

    ``positions``: (..., N, d) centres; ``radii``: (..., N) or a scalar, same length unit;
    ``q``: (M, d), radians per unit; ``contrast``: density contrast per particle
    ((..., N) or scalar); ``probe_sigma``: Gaussian probe amplitude width (same unit),
    evaluated at each centre (the probe is taken constant across one particle), centred
    at ``probe_center`` (default the origin); None = plane wave.
    Returns (..., M): |sum_j c_j V_j F(|q| R_j) P(r_j) exp(-i q . r_j)|^2, with V_j the
    sphere volume 4/3 pi R^3 or the disk area pi R^2.
    """
    torch = _torch()
    if kind not in ("sphere", "disk"):
        raise ValueError(f"kind: expected 'sphere' or 'disk', found {kind!r}")
    d = 3 if kind == "sphere" else 2
    if positions.shape[-1] != d or q.shape[-1] != d:
        raise ValueError(f"positions/q: expected {d} coordinates for {kind}s, found "
                         f"{positions.shape[-1]} and {q.shape[-1]}")
    radii = torch.as_tensor(radii, dtype=positions.dtype, device=positions.device)
    qn = torch.sqrt((q * q).sum(-1))  # (M,)
    x = qn[:, None] * radii.unsqueeze(-2) if radii.ndim else qn[:, None] * radii  # (..., M, N)
    if kind == "sphere":
        ff = sphere_form_factor(x)
        vol = 4.0 / 3.0 * np.pi * radii ** 3
    else:
        ff = disk_form_factor(x)
        vol = np.pi * radii ** 2
    weight = contrast * vol  # (..., N) or scalar
    if probe_sigma is not None:
        c = torch.zeros(d, dtype=positions.dtype, device=positions.device) if probe_center is None else \
            torch.as_tensor(probe_center, dtype=positions.dtype, device=positions.device)
        r2 = ((positions - c) ** 2).sum(-1)
        weight = weight * torch.exp(-r2 / (2.0 * float(probe_sigma) ** 2))
    weight = torch.as_tensor(weight, dtype=positions.dtype, device=positions.device)
    if weight.ndim:
        weight = weight.unsqueeze(-2)
    amp = weight * ff  # (..., M, N)
    phase = (positions.unsqueeze(-3) * q.unsqueeze(-2)).sum(-1)  # (..., M, N)
    re = (amp * torch.cos(phase)).sum(-1)
    im = -(amp * torch.sin(phase)).sum(-1)
    return re * re + im * im


# --------------------------------------------------------------------------- counting noise


def poisson_counts(intensity: "torch.Tensor", *, total_counts: float | None = None, seed: int) -> "torch.Tensor":
    """Poisson counting noise: counts ~ Poisson(lambda), lambda = intensity scaled so that
    the expected counts of each frame (last two dims) sum to ``total_counts``
    (``None``: the intensity already is the expected count).  Seeded (a
    ``torch.Generator`` on the tensor's device); not differentiable, so training uses
    the noise-free path and noise only enters the data.  Returns float counts."""
    torch = _torch()
    lam = intensity.detach()
    if total_counts is not None:
        s = lam.sum(dim=(-2, -1), keepdim=True)
        lam = lam * (float(total_counts) / torch.clamp(s, min=torch.finfo(lam.dtype).tiny))
    if bool((lam < 0).any()) or not bool(torch.isfinite(lam).all()):
        raise ValueError("intensity: expected finite non-negative expected counts, found negative or NaN")
    gen = torch.Generator(device=lam.device)
    gen.manual_seed(int(seed))
    return torch.poisson(lam, generator=gen)


# --------------------------------------------------------------------------- numpy references


def direct_intensity_numpy(rho: np.ndarray, positions: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Reference |sum_j rho_j exp(-i q . r_j)|^2 by explicit loops (slow; tests only).

    ``rho``: (N,) real or complex; ``positions``: (N, d); ``q``: (M, d).  Returns (M,).
    """
    rho = np.asarray(rho).reshape(-1)
    positions = np.asarray(positions, dtype=float).reshape(rho.size, -1)
    q = np.asarray(q, dtype=float).reshape(-1, positions.shape[1])
    out = np.empty(q.shape[0])
    for m in range(q.shape[0]):
        total = 0.0 + 0.0j
        for j in range(rho.size):
            total += rho[j] * np.exp(-1j * float(np.dot(q[m], positions[j])))
        out[m] = total.real ** 2 + total.imag ** 2
    return out


def grid_intensity_numpy(rho: np.ndarray, probe: np.ndarray | None = None, *, oversample: int = 1,
                         shift: bool = True) -> np.ndarray:
    """Reference for :func:`grid_intensity`: the direct double sum over pixel positions
    at every q of :func:`grid_q` (pixel pitch 1)."""
    rho = np.asarray(rho)
    field = rho * (1.0 if probe is None else np.asarray(probe))
    h, w = field.shape
    yy, xx = np.meshgrid(np.arange(h, dtype=float), np.arange(w, dtype=float), indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], axis=1)
    qy, qx = grid_q((h, w), 1.0, oversample, shift)
    qq = np.stack(np.meshgrid(qy, qx, indexing="ij"), axis=-1).reshape(-1, 2)
    return direct_intensity_numpy(field.ravel(), pos, qq).reshape(qy.size, qx.size)


def pointcloud_intensity_numpy(positions: np.ndarray, radii: np.ndarray | float, q: np.ndarray, *,
                               kind: str = "sphere", contrast: np.ndarray | float = 1.0,
                               probe_sigma: float | None = None,
                               probe_center: Sequence[float] | None = None) -> np.ndarray:
    """Reference for :func:`pointcloud_intensity` (one configuration): form factors from
    the closed forms (scipy's J1 for disks) and the explicit-loop direct sum."""
    from scipy.special import j1

    positions = np.asarray(positions, dtype=float)
    n, d = positions.shape
    q = np.asarray(q, dtype=float)
    radii = np.broadcast_to(np.asarray(radii, dtype=float), (n,))
    contrast = np.broadcast_to(np.asarray(contrast, dtype=float), (n,))
    c = np.zeros(d) if probe_center is None else np.asarray(probe_center, dtype=float)
    out = np.empty(q.shape[0])
    for m in range(q.shape[0]):
        qn = float(np.sqrt(np.dot(q[m], q[m])))
        total = 0.0 + 0.0j
        for j in range(n):
            x = qn * radii[j]
            if kind == "sphere":
                ff = 1.0 if x == 0 else 3.0 * (np.sin(x) - x * np.cos(x)) / x ** 3
                vol = 4.0 / 3.0 * np.pi * radii[j] ** 3
            else:
                ff = 1.0 if x == 0 else 2.0 * j1(x) / x
                vol = np.pi * radii[j] ** 2
            p = 1.0 if probe_sigma is None else np.exp(-np.sum((positions[j] - c) ** 2) / (2.0 * probe_sigma ** 2))
            total += contrast[j] * vol * ff * p * np.exp(-1j * float(np.dot(q[m], positions[j])))
        out[m] = total.real ** 2 + total.imag ** 2
    return out
