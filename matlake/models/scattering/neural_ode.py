"""Neural-ODE dynamics learned from a coherent diffraction time series, through the forward model.

The real-space state y(t) on an L x L periodic lattice (phases theta for Kuramoto,
fields (u, v) for Gray-Scott) evolves by dy/dt = f_net(y).  The network never sees
real space during training: each predicted state is mapped to far-field intensities
by the differentiable forward model (density -> probe -> zero-padded FFT -> |.|^2 ->
beam-stop mask) and compared with the measured frames in reciprocal space.

**Networks** (local and translation invariant).  Kuramoto (``LatticeODE``): local features x
(sin/cos of a phase, or the fields), z = circular k x k convolution of x, features
[z, x_c * z] (local-times-neighbourhood products, which is how pair couplings such as
sin(theta_j - theta_i) = sin theta_j cos theta_i - cos theta_j sin theta_i arise), a
1 x 1 linear head plus a 1 x 1 tanh MLP, and for Kuramoto a learned per-site rate
(the unknown natural frequency of each oscillator).  Gray-Scott
(``ReactionDiffusionODE``): a linear 3 x 3 circular stencil of the fields (transport)
plus a 1 x 1 two-layer tanh MLP of the local fields (reaction).

**Loss**: frames are compared as normalised amplitudes a = sqrt(I / sum_mask I) on
valid pixels (scale free, so the unknown incident flux and counting scale drop out);
the per-frame error ||a_pred - a_obs|| (0 = identical, sqrt 2 = orthogonal) squared,
averaged over random sub-trajectories of ``sub_len`` frames inside the training window.

**Phase problem / assumption**: intensities do not determine the real-space state,
so the first state of every sub-trajectory is taken from the simulator's ground truth
(``initial_state = 'truth'``); extrapolation likewise starts from the true state at the
last frame of the training window.  The dynamics themselves are learned from
diffraction only.

**Time**: the ODE runs in units of the frame interval (tau = t / dt_frame), fixed-step
RK4 (``substeps`` per frame) through torchdiffeq's ``odeint``.

**Evaluation** (:func:`evaluate`): fitted trajectory over the training window from the
first true state, reciprocal loss on training and held-out frames, real-space error
where truth exists (Kuramoto: mean 1 - cos(theta_pred - theta_true); Gray-Scott: RMS
of the fields), and extrapolation error vs horizon against a constant baseline (last
observed frame held) and a linear one (last two observed frames extrapolated; in real
space the same on the true states, phase differences wrapped).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from matlake.models.scattering.systems import GrayScottParams, KuramotoParams, ScatterParams
from matlake.optional import require_torch

if TYPE_CHECKING:
    import torch

__all__ = ["NODE_VERSION", "NodeParams", "build_network", "default_device", "train_node", "evaluate", "rollout",
           "normalized_amplitude", "frame_errors"]

NODE_VERSION = "1"


@dataclass(frozen=True)
class NodeParams:
    """Training settings: ``n_train`` first frames form the training window; ``hidden``
    channels; ``sub_len`` frames per sub-trajectory, ``batch`` sub-trajectories per step,
    ``iters`` Adam steps at learning rate ``lr`` (cosine decay); ``substeps`` RK4 steps
    per frame interval; ``seed`` for the weights and the batches."""

    n_train: int = 40
    hidden: int = 8
    sub_len: int = 5
    batch: int = 8
    iters: int = 200
    lr: float = 0.02
    substeps: int = 2
    method: str = "rk4"
    initial_state: str = "truth"
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _torch() -> Any:
    return require_torch("neural-ODE dynamics")


def default_device() -> str:
    """'cuda' when torch sees a GPU, else 'cpu'."""
    return "cuda" if _torch().cuda.is_available() else "cpu"


def build_network(system: KuramotoParams | GrayScottParams, hidden: int) -> "torch.nn.Module":
    """The dynamics network for ``system`` (architecture is code; only weights are stored)."""
    torch = _torch()
    nn = torch.nn
    if isinstance(system, KuramotoParams):
        channels, kernel, phase, per_site = 1, 5, True, True
    elif isinstance(system, GrayScottParams):
        channels, kernel, phase, per_site = 2, 3, False, False
    else:
        raise TypeError(f"system: expected KuramotoParams or GrayScottParams, found {type(system).__name__}")
    size = system.size

    class LatticeODE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            in_ch = 2 * channels if phase else channels
            self.conv = nn.Conv2d(in_ch, hidden, kernel, padding=kernel // 2, padding_mode="circular", bias=False)
            nf = hidden * (1 + in_ch)
            self.lin = nn.Conv2d(nf, channels, 1)
            self.mlp1 = nn.Conv2d(nf, hidden, 1)
            self.mlp2 = nn.Conv2d(hidden, channels, 1)
            nn.init.zeros_(self.mlp2.weight)  # start from the linear head; the MLP adds what it lacks
            nn.init.zeros_(self.mlp2.bias)
            # Start near dy/dt = 0: a random head of full size makes the first roll-outs
            # grow exponentially over a few frames, and training starts from NaNs.
            with torch.no_grad():
                self.lin.weight.mul_(0.1)
                self.lin.bias.zero_()
            self.site = nn.Parameter(torch.zeros(channels, size, size)) if per_site else None

        def forward(self, t: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
            x = torch.cat([torch.sin(y), torch.cos(y)], dim=1) if phase else y
            z = self.conv(x)
            f = torch.cat([z] + [x[:, i:i + 1] * z for i in range(x.shape[1])], dim=1)
            out = self.lin(f) + self.mlp2(torch.tanh(self.mlp1(f)))
            if self.site is not None:
                out = out + self.site
            return out

    class ReactionDiffusionODE(nn.Module):
        """dy/dt = (linear k x k circular stencil of y) + (1 x 1 tanh MLP of y): a transport
        term that is linear in the fields plus a local reaction term of any shape."""

        def __init__(self) -> None:
            super().__init__()
            self.stencil = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, padding_mode="circular",
                                     bias=False)
            self.r1 = nn.Conv2d(channels, hidden, 1)
            self.r2 = nn.Conv2d(hidden, hidden, 1)
            self.r3 = nn.Conv2d(hidden, channels, 1)
            with torch.no_grad():  # start near dy/dt = 0 (see LatticeODE)
                self.stencil.weight.mul_(0.1)
                self.r3.weight.mul_(0.1)
                self.r3.bias.zero_()

        def forward(self, t: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
            return self.stencil(y) + self.r3(torch.tanh(self.r2(torch.tanh(self.r1(y)))))

    return LatticeODE() if phase else ReactionDiffusionODE()


def _state_tensor(system: KuramotoParams | GrayScottParams, states: np.ndarray, dtype: Any) -> "torch.Tensor":
    """(T, C, L, L) tensor of simulator states (Kuramoto (T, L, L) gets C = 1)."""
    torch = _torch()
    s = torch.as_tensor(np.asarray(states, dtype=float), dtype=dtype)
    return s.unsqueeze(1) if isinstance(system, KuramotoParams) else s


def _density(system: KuramotoParams | GrayScottParams, y: "torch.Tensor") -> "torch.Tensor":
    torch = _torch()
    if isinstance(system, KuramotoParams):
        return torch.cos(y[..., 0, :, :])
    return y[..., 0 if system.observable == "u" else 1, :, :]


def _forward(system: KuramotoParams | GrayScottParams, scatter: ScatterParams, y: "torch.Tensor",
             mask: "torch.Tensor") -> "torch.Tensor":
    from matlake.models.scattering import forward as fw

    rho = _density(system, y)
    probe = None if scatter.probe_sigma is None else fw.gaussian_probe(rho.shape[-2:], scatter.probe_sigma,
                                                                       dtype=rho.dtype, device=rho.device)
    return fw.grid_intensity(rho, probe, oversample=scatter.oversample, mask=mask)


def normalized_amplitude(intensity: "torch.Tensor", mask: "torch.Tensor") -> "torch.Tensor":
    """sqrt(I / sum over valid pixels of I) on valid pixels (0 elsewhere), per frame."""
    torch = _torch()
    i = torch.clamp(intensity, min=0.0) * mask
    s = i.sum(dim=(-2, -1), keepdim=True)
    return torch.sqrt(i / torch.clamp(s, min=1e-30) + 1e-30) * mask


def frame_errors(pred: "torch.Tensor", obs: "torch.Tensor", mask: "torch.Tensor") -> "torch.Tensor":
    """Reciprocal-space error per frame: ||a_pred - a_obs|| of the normalised amplitudes."""
    torch = _torch()
    d = normalized_amplitude(pred, mask) - normalized_amplitude(obs, mask)
    return torch.sqrt((d * d).sum(dim=(-2, -1)))


def rollout(net: "torch.nn.Module", y0: "torch.Tensor", n_frames: int, substeps: int,
            method: str = "rk4") -> "torch.Tensor":
    """States at frames 0..n_frames-1 from ``y0`` (B, C, L, L): (n_frames, B, C, L, L)."""
    torch = _torch()
    from torchdiffeq import odeint

    tt = torch.arange(n_frames, dtype=y0.dtype, device=y0.device)
    opts = {"step_size": 1.0 / substeps} if method in ("rk4", "euler", "midpoint") else None
    return odeint(net, y0, tt, method=method, options=opts)


def train_node(system: KuramotoParams | GrayScottParams, frames: np.ndarray, mask: np.ndarray,
               states: np.ndarray, scatter: ScatterParams, params: NodeParams,
               device: str | None = None) -> tuple["torch.nn.Module", dict[str, Any]]:
    """Train the dynamics network on the first ``params.n_train`` diffraction frames.

    ``device``: a torch device; None = ``cuda`` when torch sees a GPU, else ``cpu``
    (the history records the one used).

    ``frames`` (T, H, W) measured/simulated intensities (counts), ``mask`` (H, W) 1 =
    valid, ``states`` the true real-space states, used ONLY as the first state of each
    sub-trajectory (the stated assumption).  Returns the network and a history dict
    (loss per step, seconds).
    """
    import time

    torch = _torch()
    if params.initial_state != "truth":
        raise ValueError(f"initial_state: expected 'truth', found {params.initial_state!r}")
    n_train = int(params.n_train)
    if not 2 <= params.sub_len <= n_train or n_train > frames.shape[0]:
        raise ValueError(f"n_train/sub_len: expected 2 <= sub_len <= n_train <= {frames.shape[0]}, "
                         f"found sub_len={params.sub_len}, n_train={n_train}")
    dtype = torch.float32
    dev = torch.device(device or default_device())
    y_true = _state_tensor(system, states, dtype).to(dev)
    m = torch.as_tensor(np.asarray(mask, dtype=float), dtype=dtype, device=dev)
    obs = torch.as_tensor(np.asarray(frames[:n_train], dtype=float), dtype=dtype, device=dev)
    a_obs = normalized_amplitude(obs, m)
    rng = np.random.default_rng(params.seed)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(params.seed)
        net = build_network(system, params.hidden).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=params.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=params.iters, eta_min=params.lr * 0.05)
    losses = []
    steps = torch.arange(1, params.sub_len, device=dev)
    t0 = time.perf_counter()
    for _ in range(params.iters):
        starts = torch.as_tensor(rng.integers(0, n_train - params.sub_len + 1, size=params.batch), device=dev)
        ys = rollout(net, y_true[starts], params.sub_len, params.substeps, params.method)[1:]
        pred = _forward(system, scatter, ys, m)
        target = a_obs[starts[None, :] + steps[:, None]]
        d = normalized_amplitude(pred, m) - target
        loss = (d * d).sum(dim=(-2, -1)).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    history = {"loss": losses, "train_seconds": time.perf_counter() - t0, "device": str(dev)}
    return net, history


def _real_error(system: KuramotoParams | GrayScottParams, pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-frame real-space error: mean(1 - cos dtheta) (Kuramoto) or RMS field error."""
    axes = tuple(range(1, pred.ndim))
    if isinstance(system, KuramotoParams):
        return np.mean(1.0 - np.cos(pred - true), axis=axes)
    return np.sqrt(np.mean((pred - true) ** 2, axis=axes))


def evaluate(net: "torch.nn.Module", system: KuramotoParams | GrayScottParams, frames: np.ndarray,
             mask: np.ndarray, states: np.ndarray | None, scatter: ScatterParams, params: NodeParams,
             initial_states: np.ndarray | None = None) -> dict[str, Any]:
    """Fitted trajectory, held-out reciprocal loss and extrapolation error vs horizon.

    ``states``: true real-space states (T, ...) or None (then ``initial_states`` must give
    the states at frame 0 and at frame n_train - 1, the assumed starting points).
    Returns numpy arrays: ``horizon`` (frames beyond the window, 1..T - n_train),
    ``node_recip``, ``constant_recip``, ``linear_recip`` (reciprocal error per horizon),
    ``node_real``, ``constant_real``, ``linear_real`` (None without truth), ``fitted``
    (n_train, ...) and ``extrapolated`` (T - n_train, ...) real-space states,
    ``train_recip`` (per training frame), and scalar summaries.
    """
    torch = _torch()
    n_train = int(params.n_train)
    n_total = frames.shape[0]
    n_ahead = n_total - n_train
    if n_ahead < 1:
        raise ValueError(f"n_train: expected fewer than the {n_total} frames to leave a horizon, found {n_train}")
    dev = next(net.parameters()).device
    dtype = torch.float32
    if states is not None:
        start_states = np.stack([states[0], states[n_train - 1]])
    elif initial_states is not None:
        start_states = np.asarray(initial_states)
    else:
        raise ValueError("states: expected true states or initial_states (frame 0 and frame n_train - 1)")
    y0 = _state_tensor(system, start_states, dtype).to(dev)
    m = torch.as_tensor(np.asarray(mask, dtype=float), dtype=dtype, device=dev)
    obs = torch.as_tensor(np.asarray(frames, dtype=float), dtype=dtype, device=dev)
    with torch.no_grad():
        fit = rollout(net, y0[0:1], n_train, params.substeps, params.method)[:, 0]  # (n_train, C, L, L)
        ext = rollout(net, y0[1:2], n_ahead + 1, params.substeps, params.method)[1:, 0]  # (n_ahead, C, L, L)
        train_recip = frame_errors(_forward(system, scatter, fit, m), obs[:n_train], m)
        node_recip = frame_errors(_forward(system, scatter, ext, m), obs[n_train:], m)
        last, prev = obs[n_train - 1], obs[n_train - 2]
        h = torch.arange(1, n_ahead + 1, dtype=dtype, device=dev)[:, None, None]
        const_recip = frame_errors(last.expand(n_ahead, -1, -1), obs[n_train:], m)
        lin_recip = frame_errors(torch.clamp(last + h * (last - prev), min=0.0), obs[n_train:], m)

    def as_np(y: "torch.Tensor") -> np.ndarray:
        a = y.cpu().numpy().astype(float)
        return a[:, 0] if isinstance(system, KuramotoParams) else a

    fitted, extrapolated = as_np(fit), as_np(ext)
    out: dict[str, Any] = {
        "horizon": np.arange(1, n_ahead + 1),
        "node_recip": node_recip.cpu().numpy().astype(float),
        "constant_recip": const_recip.cpu().numpy().astype(float),
        "linear_recip": lin_recip.cpu().numpy().astype(float),
        "train_recip": train_recip.cpu().numpy().astype(float),
        "fitted": fitted,
        "extrapolated": extrapolated,
        "node_real": None, "constant_real": None, "linear_real": None, "fitted_real": None,
    }
    if states is not None:
        truth = np.asarray(states, dtype=float)
        future = truth[n_train:]
        last_s, prev_s = truth[n_train - 1], truth[n_train - 2]
        step = last_s - prev_s
        if isinstance(system, KuramotoParams):
            step = np.angle(np.exp(1j * step))  # phase increment wrapped to (-pi, pi]
        hh = np.arange(1, n_ahead + 1, dtype=float).reshape((-1,) + (1,) * last_s.ndim)
        out["node_real"] = _real_error(system, extrapolated, future)
        out["constant_real"] = _real_error(system, np.broadcast_to(last_s, future.shape), future)
        out["linear_real"] = _real_error(system, last_s + hh * step, future)
        out["fitted_real"] = _real_error(system, fitted, truth[:n_train])
    out["summary"] = {
        "train_recip_mean": float(out["train_recip"].mean()),
        "heldout_recip_mean": float(out["node_recip"].mean()),
        "constant_recip_mean": float(out["constant_recip"].mean()),
        "linear_recip_mean": float(out["linear_recip"].mean()),
        "node_real_mean": None if out["node_real"] is None else float(out["node_real"].mean()),
        "constant_real_mean": None if out["constant_real"] is None else float(out["constant_real"].mean()),
        "linear_real_mean": None if out["linear_real"] is None else float(out["linear_real"].mean()),
        "n_train": n_train,
        "n_heldout": n_ahead,
    }
    for k, v in out["summary"].items():
        if isinstance(v, float) and not math.isfinite(v):
            raise FloatingPointError(f"{k}: expected a finite error, found {v} (the learned dynamics diverged; "
                                     "train on longer sub-trajectories or with a smaller lr)")
    return out
