"""U-net segmentation networks in plain torch with a pluggable encoder family.

segmentation_models_pytorch (the field's library) needs torchvision, which
cannot be installed next to matlake's torch, so the network is written here.
Every family shares one decoder; only the encoder stages differ:

``plain``      VGG-style double 3x3 convolution per stage, max-pool between stages
               (Ronneberger et al. 2015);
``resnet``     two basic residual blocks per stage, the first strided (He et al. 2016);
``mobilenet``  two inverted residual blocks (1x1 expand, depthwise 3x3, 1x1 project)
               per stage (Sandler et al. 2018);
``dense``      a dense block (each layer sees every earlier feature map) and a
               1x1 transition per stage, average-pool between stages (Huang et al. 2017).

Stage ``i`` (0-based) has ``base * 2**i`` channels at ``1 / 2**i`` of the input
resolution; the input height and width must be multiples of ``2**(depth-1)``
(:func:`padded_size`).  The network returns logits ``(B, n_classes, H, W)``.

``encoder_weights`` is ``None`` (random init from the torch seed) or the path
of a local state-dict file of the encoder (as written by
:func:`matlake.models.base.torch_state_dumps` of ``net.encoder``) whose sha256
the caller gives: the bytes are checked before anything is loaded, and nothing
is ever downloaded.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matlake.optional import require_torch

if TYPE_CHECKING:
    import torch

ENCODERS = ("plain", "resnet", "mobilenet", "dense")


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of one U-net: encoder family, channels in/out, depth and base width."""

    encoder: str = "plain"
    in_channels: int = 1
    n_classes: int = 2
    depth: int = 4
    base: int = 16

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, found {self.encoder!r}")
        if self.depth < 1 or self.base < 1 or self.in_channels < 1 or self.n_classes < 2:
            raise ValueError(f"bad U-net config {self}: need depth >= 1, base >= 1, in_channels >= 1, n_classes >= 2")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** (self.depth - 1)


def padded_size(n: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` at least ``n``."""
    return -(-n // multiple) * multiple


def _nn():
    return require_torch("the U-net segmentation models").nn


def _conv_bn_relu(nn, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True):
    layers = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _double_conv(nn, cin: int, cout: int):
    return nn.Sequential(_conv_bn_relu(nn, cin, cout), _conv_bn_relu(nn, cout, cout))


def _make_blocks():
    """Block classes, defined on first use so that importing this module needs no torch."""
    torch = require_torch("the U-net segmentation models")
    nn = torch.nn

    class BasicBlock(nn.Module):
        """Two 3x3 convolutions with an identity (or 1x1 projected) shortcut."""

        def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
            super().__init__()
            self.body = nn.Sequential(_conv_bn_relu(nn, cin, cout, stride=stride),
                                      _conv_bn_relu(nn, cout, cout, act=False))
            self.short = (nn.Identity() if stride == 1 and cin == cout
                          else _conv_bn_relu(nn, cin, cout, k=1, stride=stride, act=False))
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.act(self.body(x) + self.short(x))

    class InvertedResidual(nn.Module):
        """1x1 expansion, depthwise 3x3, linear 1x1 projection; residual when shapes match."""

        def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 4) -> None:
            super().__init__()
            mid = cin * expand
            self.body = nn.Sequential(_conv_bn_relu(nn, cin, mid, k=1),
                                      _conv_bn_relu(nn, mid, mid, stride=stride, groups=mid),
                                      _conv_bn_relu(nn, mid, cout, k=1, act=False))
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            return x + y if self.residual else y

    class DenseStage(nn.Module):
        """A dense block of ``n_layers`` 3x3 layers (growth ``growth``) and a 1x1 transition."""

        def __init__(self, cin: int, cout: int, n_layers: int = 3) -> None:
            super().__init__()
            growth = max(cout // 2, 4)
            self.layers = nn.ModuleList(_conv_bn_relu(nn, cin + i * growth, growth) for i in range(n_layers))
            self.transition = _conv_bn_relu(nn, cin + n_layers * growth, cout, k=1)

        def forward(self, x):
            feats = [x]
            for layer in self.layers:
                feats.append(layer(torch.cat(feats, 1)))
            return self.transition(torch.cat(feats, 1))

    return BasicBlock, InvertedResidual, DenseStage


def build_encoder(cfg: UNetConfig):
    """The encoder: an ``nn.ModuleList`` of ``cfg.depth`` stages (stage i halves the resolution for i > 0)."""
    nn = _nn()
    BasicBlock, InvertedResidual, DenseStage = _make_blocks()
    stages = []
    cin = cfg.in_channels
    for i in range(cfg.depth):
        cout = cfg.base * 2 ** i
        down = i > 0
        if cfg.encoder == "plain":
            stage = nn.Sequential(*([nn.MaxPool2d(2)] if down else []), _double_conv(nn, cin, cout))
        elif cfg.encoder == "resnet":
            stage = nn.Sequential(BasicBlock(cin, cout, stride=2 if down else 1), BasicBlock(cout, cout))
        elif cfg.encoder == "mobilenet":
            # the first stage sees the raw image: a full 3x3 conv there, as MobileNetV2 does
            first = (InvertedResidual(cin, cout, stride=2) if down else _conv_bn_relu(nn, cin, cout))
            stage = nn.Sequential(first, InvertedResidual(cout, cout))
        else:  # dense
            stage = nn.Sequential(*([nn.AvgPool2d(2)] if down else []), DenseStage(cin, cout))
        stages.append(stage)
        cin = cout
    return nn.ModuleList(stages)


def _unet_class():
    torch = require_torch("the U-net segmentation models")
    nn = torch.nn

    class UNet(nn.Module):
        """Encoder stages, then per level: 2x transposed-conv upsampling, concatenation with the
        skip features and a double conv; a 1x1 head gives ``n_classes`` logits per pixel."""

        def __init__(self, cfg: UNetConfig) -> None:
            super().__init__()
            self.cfg = cfg
            self.encoder = build_encoder(cfg)
            widths = [cfg.base * 2 ** i for i in range(cfg.depth)]
            self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i], widths[i - 1], 2, stride=2)
                                    for i in range(cfg.depth - 1, 0, -1))
            self.dec = nn.ModuleList(_double_conv(nn, 2 * widths[i - 1], widths[i - 1])
                                     for i in range(cfg.depth - 1, 0, -1))
            self.head = nn.Conv2d(widths[0], cfg.n_classes, 1)

        def forward(self, x):
            m = self.cfg.multiple
            if x.shape[-1] % m or x.shape[-2] % m:
                raise ValueError(f"U-net input height and width must be multiples of {m}, found {tuple(x.shape[-2:])}")
            skips = []
            for stage in self.encoder:
                x = stage(x)
                skips.append(x)
            x = skips.pop()
            for up, dec in zip(self.up, self.dec):
                x = dec(torch.cat([up(x), skips.pop()], 1))
            return self.head(x)

    return UNet


def build_unet(cfg: UNetConfig | None = None, *, encoder_weights: str | Path | None = None,
               encoder_sha256: str | None = None, **kw: Any) -> "torch.nn.Module":
    """A U-net for ``cfg`` (or ``UNetConfig(**kw)``), weights initialised from the current torch seed.

    ``encoder_weights``: a local encoder state-dict file; ``encoder_sha256`` (required with it)
    is checked against the file's bytes before loading.  Never downloads anything.
    """
    cfg = cfg or UNetConfig(**kw)
    net = _unet_class()(cfg)
    if encoder_weights is not None:
        load_encoder_weights(net, encoder_weights, encoder_sha256)
    return net


def load_encoder_weights(net: "torch.nn.Module", path: str | Path, sha256: str | None) -> None:
    """Load a local encoder state dict into ``net.encoder`` after checking the file's sha256."""
    from matlake.models.base import torch_state_loads

    if not sha256:
        raise ValueError(f"encoder weights {path}: give the expected sha256 of the file (weights are never trusted unchecked)")
    data = Path(path).read_bytes()
    found = hashlib.sha256(data).hexdigest()
    if found != sha256.lower():
        raise ValueError(f"encoder weights {path}: field sha256: expected {sha256}, found {found}")
    torch_state_loads(data, net.encoder)
    net.train()  # torch_state_loads leaves eval mode; the caller decides
