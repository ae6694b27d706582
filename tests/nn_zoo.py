"""A catalogue of ``torch.nn`` module instances with small, seeded inputs.

Every class in ``torch.nn.modules.__all__`` (plus module classes that ``torch.nn`` exports beyond it, such as
``DataParallel``) is listed in exactly one of:

* ``CASES``: stock ``torch.compile(fullgraph=True, backend="eager")`` compiles the call as one graph and its result
  equals eager (under ``torch.no_grad()``, ``assert_close(atol=1e-5, rtol=1e-4)`` on every tensor leaf);
* ``REFUSED``: the class has a simple call, but stock ``torch.compile(fullgraph=True)`` refuses it; the value is the
  first line of the exception. ``REFUSED_CASES`` holds those calls, so a test can check what nocompile does with them;
* ``NOT_CALLABLE``: there is no simple call (abstract bases, containers without ``forward``, GPU-only modules...).

A case's name is the class name, optionally followed by ``-variant``; ``class_of(case)`` gives the class name.
``make`` builds a fresh module (seeded, in ``eval()`` mode) and ``inputs``/``kwargs`` build fresh inputs (seeded), so
repeated calls give identical modules and inputs. Sizes are tiny: widths <= 16, sequence lengths <= 6.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = [
    "CASES",
    "NOT_CALLABLE",
    "REFUSED",
    "REFUSED_CASES",
    "Case",
    "all_class_names",
    "class_of",
]


@dataclasses.dataclass(frozen=True)
class Case:
    """One module call: ``make()(*inputs(), **kwargs())``."""

    name: str  # the class name, e.g. "Linear"; variants have a suffix, e.g. "Conv2d-groups"
    make: Callable[[], nn.Module]  # builds the module, seeded, in eval() mode
    inputs: Callable[[], tuple[Any, ...]]  # builds fresh positional inputs (seeded)
    kwargs: Callable[[], dict[str, Any]] = dict  # builds fresh keyword inputs


def class_of(case: Case) -> str:
    """The ``torch.nn`` class name a case exercises (its name before any ``-variant`` suffix)."""
    return case.name.split("-", 1)[0]


def all_class_names() -> list[str]:
    """Every name in ``torch.nn.modules.__all__``, plus the ``nn.Module`` subclasses ``torch.nn`` exports beyond it."""
    names = set(nn.modules.__all__)
    for name in dir(nn):
        obj = getattr(nn, name)
        if not name.startswith("_") and inspect.isclass(obj) and issubclass(obj, nn.Module):
            names.add(name)
    return sorted(names)


# --------------------------------------------------------------------------------------------------------------------
# Builders


def _module(factory: Callable[[], nn.Module], seed: int = 0) -> Callable[[], nn.Module]:
    """``make`` for a module: seed, build, ``eval()``."""

    def make() -> nn.Module:
        torch.manual_seed(seed)
        return factory().eval()

    return make


def _lazy(factory: Callable[[], nn.Module], *sample: tuple[int, ...], seed: int = 0) -> Callable[[], nn.Module]:
    """``make`` for a lazy module: seed, build, then call it once eagerly on a sample input so that its parameters
    are materialised (a lazy module initialises itself on its first call, and becomes its ``cls_to_become``)."""

    def make() -> nn.Module:
        torch.manual_seed(seed)
        module = factory()
        with torch.no_grad():
            module(*(torch.randn(shape) for shape in sample))
        return module.eval()

    return make


def _randn(*shapes: tuple[int, ...], seed: int = 1) -> Callable[[], tuple[Any, ...]]:
    """``inputs`` of float tensors from the standard normal, one per shape."""

    def inputs() -> tuple[Any, ...]:
        torch.manual_seed(seed)
        return tuple(torch.randn(shape) for shape in shapes)

    return inputs


def _seeded(build: Callable[[], tuple[Any, ...]], seed: int = 1) -> Callable[[], tuple[Any, ...]]:
    """``inputs`` built by ``build`` after seeding (for integer, positive or otherwise shaped inputs)."""

    def inputs() -> tuple[Any, ...]:
        torch.manual_seed(seed)
        return build()

    return inputs


def _case(name: str, factory: Callable[[], nn.Module], *shapes: tuple[int, ...]) -> Case:
    """A case whose inputs are standard-normal float tensors of the given shapes."""
    return Case(name, _module(factory), _randn(*shapes))


def _sign(*shape: int) -> torch.Tensor:
    """A tensor of +1/-1 (targets of the margin and embedding losses)."""
    return torch.randint(0, 2, shape).float() * 2 - 1


def _maxpool_with_indices(pool: nn.Module, *shape: int) -> tuple[Any, ...]:
    """A pooled tensor and its indices, the inputs of MaxUnpool*d."""
    output, indices = pool(torch.randn(shape))
    return output, indices


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8), nn.LayerNorm(8))


def _cnn_head() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def _encoder_layer() -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)


def _decoder_layer() -> nn.TransformerDecoderLayer:
    return nn.TransformerDecoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)


def _transformer() -> nn.Module:
    return nn.Transformer(
        d_model=8,
        nhead=2,
        num_encoder_layers=1,
        num_decoder_layers=1,
        dim_feedforward=16,
        dropout=0.0,
        batch_first=True,
    )


# Shapes used throughout: N=2 batch, C=3 channels, L=6 length, H=W=4 (2-d), D=H=W=4 (3-d), F=8 features.
_X1 = (2, 3, 6)
_X2 = (2, 3, 4, 4)
_X3 = (2, 3, 4, 4, 4)
_F = (2, 8)

# --------------------------------------------------------------------------------------------------------------------
# Cases that stock torch.compile(fullgraph=True, backend="eager") compiles, with results equal to eager.

CASES: list[Case] = [
    # Containers and wrappers.
    Case("Sequential-mlp", _module(_mlp), _randn(_F)),
    Case("Sequential-cnn_head", _module(_cnn_head), _randn((2, 3, 6, 6))),
    _case("Identity", nn.Identity, _F),
    # Linear layers.
    _case("Linear", lambda: nn.Linear(8, 4), _F),
    _case("Linear-nobias", lambda: nn.Linear(8, 4, bias=False), (2, 3, 8)),
    _case("Bilinear", lambda: nn.Bilinear(8, 6, 4), _F, (2, 6)),
    Case("LazyLinear", _lazy(lambda: nn.LazyLinear(4), _F), _randn(_F)),
    # Convolutions.
    _case("Conv1d", lambda: nn.Conv1d(3, 4, 3, padding=1), _X1),
    _case("Conv2d", lambda: nn.Conv2d(3, 4, 3, padding=1), _X2),
    _case("Conv2d-groups", lambda: nn.Conv2d(4, 8, 3, padding=1, groups=2), (2, 4, 4, 4)),
    _case("Conv2d-strided", lambda: nn.Conv2d(3, 4, 3, stride=2, dilation=1, padding="valid"), (2, 3, 6, 6)),
    _case("Conv3d", lambda: nn.Conv3d(3, 4, 3, padding=1), _X3),
    _case("ConvTranspose1d", lambda: nn.ConvTranspose1d(3, 4, 3, stride=2), _X1),
    _case("ConvTranspose2d", lambda: nn.ConvTranspose2d(3, 4, 3, stride=2), _X2),
    _case("ConvTranspose3d", lambda: nn.ConvTranspose3d(3, 4, 3, stride=2), _X3),
    Case("LazyConv1d", _lazy(lambda: nn.LazyConv1d(4, 3), _X1), _randn(_X1)),
    Case("LazyConv2d", _lazy(lambda: nn.LazyConv2d(4, 3), _X2), _randn(_X2)),
    Case("LazyConv3d", _lazy(lambda: nn.LazyConv3d(4, 3), _X3), _randn(_X3)),
    Case("LazyConvTranspose1d", _lazy(lambda: nn.LazyConvTranspose1d(4, 3), _X1), _randn(_X1)),
    Case("LazyConvTranspose2d", _lazy(lambda: nn.LazyConvTranspose2d(4, 3), _X2), _randn(_X2)),
    Case("LazyConvTranspose3d", _lazy(lambda: nn.LazyConvTranspose3d(4, 3), _X3), _randn(_X3)),
    _case("Fold", lambda: nn.Fold(output_size=(4, 4), kernel_size=2), (2, 12, 9)),
    _case("Unfold", lambda: nn.Unfold(kernel_size=2), _X2),
    # Pooling.
    _case("AvgPool1d", lambda: nn.AvgPool1d(2), _X1),
    _case("AvgPool2d", lambda: nn.AvgPool2d(2), _X2),
    _case("AvgPool3d", lambda: nn.AvgPool3d(2), _X3),
    _case("MaxPool1d", lambda: nn.MaxPool1d(2), _X1),
    _case("MaxPool2d", lambda: nn.MaxPool2d(2, return_indices=False), _X2),
    _case("MaxPool2d-indices", lambda: nn.MaxPool2d(2, return_indices=True), _X2),
    _case("MaxPool3d", lambda: nn.MaxPool3d(2), _X3),
    _case("AdaptiveAvgPool1d", lambda: nn.AdaptiveAvgPool1d(3), _X1),
    _case("AdaptiveAvgPool2d", lambda: nn.AdaptiveAvgPool2d((2, 3)), _X2),
    _case("AdaptiveAvgPool3d", lambda: nn.AdaptiveAvgPool3d(2), _X3),
    _case("AdaptiveMaxPool1d", lambda: nn.AdaptiveMaxPool1d(3), _X1),
    _case("AdaptiveMaxPool2d", lambda: nn.AdaptiveMaxPool2d((2, 3)), _X2),
    _case("AdaptiveMaxPool3d", lambda: nn.AdaptiveMaxPool3d(2), _X3),
    _case("LPPool1d", lambda: nn.LPPool1d(2, 2), _X1),
    _case("LPPool2d", lambda: nn.LPPool2d(2, 2), _X2),
    _case("LPPool3d", lambda: nn.LPPool3d(2, 2), _X3),
    # FractionalMaxPool samples its windows at random unless given _random_samples (shape N, C, dims) in [0, 1).
    _case(
        "FractionalMaxPool2d",
        lambda: nn.FractionalMaxPool2d(2, output_size=2, _random_samples=torch.rand(2, 3, 2)),
        _X2,
    ),
    _case(
        "FractionalMaxPool3d",
        lambda: nn.FractionalMaxPool3d(2, output_size=2, _random_samples=torch.rand(2, 3, 3)),
        _X3,
    ),
    Case(
        "MaxUnpool1d",
        _module(lambda: nn.MaxUnpool1d(2)),
        _seeded(lambda: _maxpool_with_indices(nn.MaxPool1d(2, return_indices=True), *_X1)),
    ),
    Case(
        "MaxUnpool2d",
        _module(lambda: nn.MaxUnpool2d(2)),
        _seeded(lambda: _maxpool_with_indices(nn.MaxPool2d(2, return_indices=True), *_X2)),
    ),
    Case(
        "MaxUnpool3d",
        _module(lambda: nn.MaxUnpool3d(2)),
        _seeded(lambda: _maxpool_with_indices(nn.MaxPool3d(2, return_indices=True), *_X3)),
    ),
    # Padding.
    _case("CircularPad1d", lambda: nn.CircularPad1d(1), _X1),
    _case("CircularPad2d", lambda: nn.CircularPad2d((1, 0, 2, 1)), _X2),
    _case("CircularPad3d", lambda: nn.CircularPad3d(1), _X3),
    _case("ConstantPad1d", lambda: nn.ConstantPad1d((1, 2), 0.5), _X1),
    _case("ConstantPad2d", lambda: nn.ConstantPad2d(1, -1.0), _X2),
    _case("ConstantPad3d", lambda: nn.ConstantPad3d(1, 2.0), _X3),
    _case("ReflectionPad1d", lambda: nn.ReflectionPad1d(2), _X1),
    _case("ReflectionPad2d", lambda: nn.ReflectionPad2d((1, 2, 0, 1)), _X2),
    _case("ReflectionPad3d", lambda: nn.ReflectionPad3d(1), _X3),
    _case("ReplicationPad1d", lambda: nn.ReplicationPad1d(2), _X1),
    _case("ReplicationPad2d", lambda: nn.ReplicationPad2d(1), _X2),
    _case("ReplicationPad3d", lambda: nn.ReplicationPad3d(1), _X3),
    _case("ZeroPad1d", lambda: nn.ZeroPad1d((2, 1)), _X1),
    _case("ZeroPad2d", lambda: nn.ZeroPad2d(1), _X2),
    _case("ZeroPad3d", lambda: nn.ZeroPad3d(1), _X3),
    # Activations.
    _case("CELU", nn.CELU, _F),
    _case("ELU", nn.ELU, _F),
    _case("GELU", nn.GELU, _F),
    _case("GELU-tanh", lambda: nn.GELU(approximate="tanh"), _F),
    _case("GLU", nn.GLU, _F),
    _case("Hardshrink", nn.Hardshrink, _F),
    _case("Hardsigmoid", nn.Hardsigmoid, _F),
    _case("Hardswish", nn.Hardswish, _F),
    _case("Hardtanh", nn.Hardtanh, _F),
    _case("LeakyReLU", lambda: nn.LeakyReLU(0.1), _F),
    _case("LogSigmoid", nn.LogSigmoid, _F),
    _case("LogSoftmax", lambda: nn.LogSoftmax(dim=-1), _F),
    _case("Mish", nn.Mish, _F),
    _case("PReLU", lambda: nn.PReLU(3), _X1),
    _case("ReLU", nn.ReLU, _F),
    _case("ReLU6", nn.ReLU6, _F),
    _case("RReLU", nn.RReLU, _F),  # eval(): a fixed slope, no sampling
    _case("SELU", nn.SELU, _F),
    _case("SiLU", nn.SiLU, _F),
    _case("Sigmoid", nn.Sigmoid, _F),
    _case("Softmax", lambda: nn.Softmax(dim=-1), _F),
    _case("Softmax2d", nn.Softmax2d, _X2),
    _case("Softmin", lambda: nn.Softmin(dim=-1), _F),
    _case("Softplus", lambda: nn.Softplus(beta=2.0), _F),
    _case("Softshrink", nn.Softshrink, _F),
    _case("Softsign", nn.Softsign, _F),
    _case("Tanh", nn.Tanh, _F),
    _case("Tanhshrink", nn.Tanhshrink, _F),
    _case("Threshold", lambda: nn.Threshold(0.1, 20.0), _F),
    # Normalization.
    _case("BatchNorm1d", lambda: nn.BatchNorm1d(3), _X1),
    _case("BatchNorm2d", lambda: nn.BatchNorm2d(3), _X2),
    _case("BatchNorm2d-nostats", lambda: nn.BatchNorm2d(3, track_running_stats=False), _X2),
    _case("BatchNorm3d", lambda: nn.BatchNorm3d(3), _X3),
    # In eval() SyncBatchNorm needs no process group and runs batch_norm on CPU too.
    _case("SyncBatchNorm", lambda: nn.SyncBatchNorm(3), _X2),
    Case("LazyBatchNorm1d", _lazy(nn.LazyBatchNorm1d, _X1), _randn(_X1)),
    Case("LazyBatchNorm2d", _lazy(nn.LazyBatchNorm2d, _X2), _randn(_X2)),
    Case("LazyBatchNorm3d", _lazy(nn.LazyBatchNorm3d, _X3), _randn(_X3)),
    _case("GroupNorm", lambda: nn.GroupNorm(2, 4), (2, 4, 6)),
    _case("InstanceNorm1d", lambda: nn.InstanceNorm1d(3), _X1),
    _case("InstanceNorm2d", lambda: nn.InstanceNorm2d(3, affine=True), _X2),
    _case("InstanceNorm3d", lambda: nn.InstanceNorm3d(3), _X3),
    Case("LazyInstanceNorm1d", _lazy(lambda: nn.LazyInstanceNorm1d(affine=True), _X1), _randn(_X1)),
    Case("LazyInstanceNorm2d", _lazy(lambda: nn.LazyInstanceNorm2d(affine=True), _X2), _randn(_X2)),
    Case("LazyInstanceNorm3d", _lazy(lambda: nn.LazyInstanceNorm3d(affine=True), _X3), _randn(_X3)),
    _case("LayerNorm", lambda: nn.LayerNorm(8), (2, 3, 8)),
    _case("LocalResponseNorm", lambda: nn.LocalResponseNorm(2), _X2),
    _case("RMSNorm", lambda: nn.RMSNorm(8), (2, 3, 8)),
    # Dropout (identity in eval()).
    _case("Dropout", lambda: nn.Dropout(0.5), _F),
    _case("Dropout1d", lambda: nn.Dropout1d(0.5), _X1),
    _case("Dropout2d", lambda: nn.Dropout2d(0.5), _X2),
    _case("Dropout3d", lambda: nn.Dropout3d(0.5), _X3),
    _case("AlphaDropout", lambda: nn.AlphaDropout(0.5), _F),
    _case("FeatureAlphaDropout", lambda: nn.FeatureAlphaDropout(0.5), _X2),
    # Shape and distance.
    _case("Flatten", nn.Flatten, _X2),
    _case("Unflatten", lambda: nn.Unflatten(1, (2, 4)), _F),
    _case("ChannelShuffle", lambda: nn.ChannelShuffle(2), (2, 4, 3, 3)),
    _case("PixelShuffle", lambda: nn.PixelShuffle(2), (2, 8, 3, 3)),
    _case("PixelUnshuffle", lambda: nn.PixelUnshuffle(2), _X2),
    _case("Upsample", lambda: nn.Upsample(scale_factor=2, mode="nearest"), _X2),
    _case("Upsample-bilinear", lambda: nn.Upsample(size=(6, 5), mode="bilinear", align_corners=False), _X2),
    _case("UpsamplingBilinear2d", lambda: nn.UpsamplingBilinear2d(scale_factor=2), _X2),
    _case("UpsamplingNearest2d", lambda: nn.UpsamplingNearest2d(size=6), _X2),
    _case("CosineSimilarity", lambda: nn.CosineSimilarity(dim=1), _F, _F),
    _case("PairwiseDistance", nn.PairwiseDistance, _F, _F),
    # Embeddings (integer inputs).
    Case("Embedding", _module(lambda: nn.Embedding(10, 8)), _seeded(lambda: (torch.randint(0, 10, (2, 5)),))),
    Case(
        "Embedding-padding_idx",
        _module(lambda: nn.Embedding(10, 8, padding_idx=0)),
        _seeded(lambda: (torch.tensor([[0, 3, 9], [4, 0, 1]]),)),
    ),
    Case(
        "EmbeddingBag",
        _module(lambda: nn.EmbeddingBag(10, 8, mode="mean")),
        _seeded(lambda: (torch.randint(0, 10, (2, 4)),)),
    ),
    Case(
        "EmbeddingBag-offsets",
        _module(lambda: nn.EmbeddingBag(10, 8, mode="sum")),
        _seeded(lambda: (torch.randint(0, 10, (6,)), torch.tensor([0, 2]))),
    ),
    # Recurrent cells (the RNN/LSTM/GRU layers are in REFUSED_CASES).
    _case("RNNCell", lambda: nn.RNNCell(4, 8), (2, 4), (2, 8)),
    _case("RNNCell-nostate", lambda: nn.RNNCell(4, 8), (2, 4)),
    Case(
        "LSTMCell",
        _module(lambda: nn.LSTMCell(4, 8)),
        _seeded(lambda: (torch.randn(2, 4), (torch.randn(2, 8), torch.randn(2, 8)))),
    ),
    _case("GRUCell", lambda: nn.GRUCell(4, 8), (2, 4), (2, 8)),
    # Attention and transformers: (N, S, E) with batch_first=True.
    _case("MultiheadAttention", lambda: nn.MultiheadAttention(8, 2, batch_first=True), (2, 5, 8), (2, 6, 8), (2, 6, 8)),
    _case(
        "MultiheadAttention-seq_first",
        lambda: nn.MultiheadAttention(8, 2, kdim=6, vdim=4),
        (5, 2, 8),
        (6, 2, 6),
        (6, 2, 4),
    ),
    _case("TransformerEncoderLayer", _encoder_layer, (2, 5, 8)),
    _case(
        "TransformerEncoder",
        lambda: nn.TransformerEncoder(_encoder_layer(), num_layers=2, enable_nested_tensor=False),
        (2, 5, 8),
    ),
    _case("TransformerDecoderLayer", _decoder_layer, (2, 5, 8), (2, 6, 8)),
    _case("TransformerDecoder", lambda: nn.TransformerDecoder(_decoder_layer(), num_layers=2), (2, 5, 8), (2, 6, 8)),
    _case("Transformer", _transformer, (2, 6, 8), (2, 5, 8)),
    # Losses: (input, target), targets of the right dtype.
    _case("L1Loss", nn.L1Loss, _F, _F),
    _case("MSELoss", nn.MSELoss, _F, _F),
    _case("MSELoss-none", lambda: nn.MSELoss(reduction="none"), _F, _F),
    _case("HuberLoss", lambda: nn.HuberLoss(delta=0.5), _F, _F),
    _case("SmoothL1Loss", nn.SmoothL1Loss, _F, _F),
    Case(
        "BCELoss",
        _module(nn.BCELoss),
        _seeded(lambda: (torch.rand(2, 8).clamp(0.05, 0.95), torch.randint(0, 2, (2, 8)).float())),
    ),
    Case(
        "BCEWithLogitsLoss",
        _module(lambda: nn.BCEWithLogitsLoss(pos_weight=torch.full((8,), 2.0))),
        _seeded(lambda: (torch.randn(2, 8), torch.randint(0, 2, (2, 8)).float())),
    ),
    Case(
        "CrossEntropyLoss",
        _module(nn.CrossEntropyLoss),
        _seeded(lambda: (torch.randn(4, 5), torch.randint(0, 5, (4,)))),
    ),
    Case(
        "CrossEntropyLoss-probs",
        _module(lambda: nn.CrossEntropyLoss(label_smoothing=0.1)),
        _seeded(lambda: (torch.randn(4, 5), torch.randn(4, 5).softmax(-1))),
    ),
    Case(
        "NLLLoss",
        _module(nn.NLLLoss),
        _seeded(lambda: (torch.randn(4, 5).log_softmax(-1), torch.randint(0, 5, (4,)))),
    ),
    Case(
        "NLLLoss2d",
        _module(nn.NLLLoss2d),
        _seeded(lambda: (torch.randn(2, 5, 3, 3).log_softmax(1), torch.randint(0, 5, (2, 3, 3)))),
    ),
    Case(
        "KLDivLoss",
        _module(lambda: nn.KLDivLoss(reduction="batchmean")),
        _seeded(lambda: (torch.randn(2, 8).log_softmax(-1), torch.randn(2, 8).softmax(-1))),
    ),
    Case(
        "PoissonNLLLoss",
        _module(nn.PoissonNLLLoss),
        _seeded(lambda: (torch.randn(2, 8), torch.poisson(torch.full((2, 8), 2.0)))),
    ),
    Case("HingeEmbeddingLoss", _module(nn.HingeEmbeddingLoss), _seeded(lambda: (torch.randn(2, 8), _sign(2, 8)))),
    Case("SoftMarginLoss", _module(nn.SoftMarginLoss), _seeded(lambda: (torch.randn(2, 8), _sign(2, 8)))),
    Case(
        "MultiLabelSoftMarginLoss",
        _module(nn.MultiLabelSoftMarginLoss),
        _seeded(lambda: (torch.randn(2, 8), torch.randint(0, 2, (2, 8)).float())),
    ),
    Case(
        "MultiLabelMarginLoss",
        _module(nn.MultiLabelMarginLoss),
        # Target class indices, padded with -1 after the last one.
        _seeded(lambda: (torch.randn(2, 5), torch.tensor([[3, 0, -1, 1, 2], [1, 2, 4, -1, -1]]))),
    ),
    Case(
        "MultiMarginLoss",
        _module(nn.MultiMarginLoss),
        _seeded(lambda: (torch.randn(4, 5), torch.randint(0, 5, (4,)))),
    ),
    Case(
        "CosineEmbeddingLoss",
        _module(lambda: nn.CosineEmbeddingLoss(margin=0.1)),
        _seeded(lambda: (torch.randn(4, 8), torch.randn(4, 8), _sign(4))),
    ),
    Case(
        "MarginRankingLoss",
        _module(lambda: nn.MarginRankingLoss(margin=0.1)),
        _seeded(lambda: (torch.randn(8), torch.randn(8), _sign(8))),
    ),
    _case("TripletMarginLoss", nn.TripletMarginLoss, _F, _F, _F),
    _case("TripletMarginWithDistanceLoss", nn.TripletMarginWithDistanceLoss, _F, _F, _F),
    _case(
        "TripletMarginWithDistanceLoss-cosine",
        lambda: nn.TripletMarginWithDistanceLoss(distance_function=nn.CosineSimilarity(), margin=0.5),
        _F,
        _F,
        _F,
    ),
    *(
        [
            Case(
                "LinearCrossEntropyLoss",
                _module(lambda: nn.LinearCrossEntropyLoss(8, 5)),  # torch 2.13 on
                _seeded(lambda: (torch.randn(4, 8), torch.randint(0, 5, (4,)))),
            )
        ]
        if hasattr(nn, "LinearCrossEntropyLoss")
        else []
    ),
    # With no visible GPU, DataParallel calls the wrapped module directly.
    Case("DataParallel", _module(lambda: nn.DataParallel(nn.Linear(8, 4))), _randn(_F)),
]

# --------------------------------------------------------------------------------------------------------------------
# Classes with a simple call that stock torch.compile(fullgraph=True, backend="eager") refuses.

REFUSED_CASES: list[Case] = [
    # Recurrent layers, (L, N, H_in) unless batch_first: Dynamo refuses to trace them unless
    # torch._dynamo.config.allow_rnn is set (it is off by default).
    _case("RNN", lambda: nn.RNN(4, 8), (5, 2, 4)),
    _case("RNN-batch_first", lambda: nn.RNN(4, 8, num_layers=2, batch_first=True, nonlinearity="relu"), (2, 5, 4)),
    _case("LSTM", lambda: nn.LSTM(4, 8), (5, 2, 4)),
    _case("LSTM-bidirectional", lambda: nn.LSTM(4, 8, num_layers=2, bidirectional=True, batch_first=True), (2, 5, 4)),
    _case("LSTM-proj", lambda: nn.LSTM(4, 8, proj_size=3), (5, 2, 4)),
    Case(
        "LSTM-state",
        _module(lambda: nn.LSTM(4, 8, batch_first=True)),
        _seeded(lambda: (torch.randn(2, 5, 4), (torch.randn(1, 2, 8), torch.randn(1, 2, 8)))),
    ),
    _case("GRU", lambda: nn.GRU(4, 8), (5, 2, 4)),
    _case("GRU-state", lambda: nn.GRU(4, 8, batch_first=True), (2, 5, 4), (1, 2, 8)),
    # A tensor var is checked with torch.any(var < 0), a data-dependent branch; a float var would compile.
    Case(
        "GaussianNLLLoss",
        _module(nn.GaussianNLLLoss),
        _seeded(lambda: (torch.randn(2, 8), torch.randn(2, 8), torch.rand(2, 8) + 0.1)),
    ),
    # aten._ctc_loss has a data-dependent output shape (also with int-tuple lengths).
    Case(
        "CTCLoss",
        _module(nn.CTCLoss),
        # log_probs (T, N, C), targets (N, S), input_lengths (N,), target_lengths (N,); class 0 is the blank.
        _seeded(
            lambda: (
                torch.randn(6, 2, 5).log_softmax(-1),
                torch.randint(1, 5, (2, 3)),
                torch.tensor([6, 5]),
                torch.tensor([3, 2]),
            )
        ),
    ),
    # forward gathers the targets of each cluster with nonzero(): data-dependent shapes.
    Case(
        "AdaptiveLogSoftmaxWithLoss",
        _module(lambda: nn.AdaptiveLogSoftmaxWithLoss(8, 10, cutoffs=[4, 8])),
        _seeded(lambda: (torch.randn(4, 8), torch.tensor([0, 5, 9, 2]))),
    ),
    # Its autograd Function (torch.nn._functions.CrossMapLRN2d) calls Tensor.resize_as_().
    Case(
        "CrossMapLRN2d",
        _module(lambda: nn.CrossMapLRN2d(3)),
        _seeded(lambda: (torch.randn(2, 4, 3, 3),)),
    ),
]

# The first line of the exception stock torch.compile(fullgraph=True, backend="eager") raises (torch 2.13).
_RNN_REFUSAL = "Attempted to wrap RNN, GRU, or LSTM"  # torch._dynamo.exc.Unsupported

REFUSED: dict[str, str] = {
    "RNN": _RNN_REFUSAL,
    "LSTM": _RNN_REFUSAL,
    "GRU": _RNN_REFUSAL,
    # torch._dynamo.exc.UserError
    "GaussianNLLLoss": "Could not guard on data-dependent expression Eq(u0, 1) (unhinted: Eq(u0, 1)).  "
    "(Size-like symbols: none)",
    # torch._dynamo.exc.Unsupported
    "CTCLoss": "Dynamic shape operator",
    # torch._dynamo.exc.UserError
    "AdaptiveLogSoftmaxWithLoss": "Consider annotating your code using torch._check*(). "
    "Could not guard on data-dependent expression Eq(u0, 0) (unhinted: Eq(u0, 0)).  (Size-like symbols: u0)",
    # torch._dynamo.exc.Unsupported
    "CrossMapLRN2d": "Unsupported Tensor.resize_as_() call",
}

# --------------------------------------------------------------------------------------------------------------------
# Classes with no simple call.

NOT_CALLABLE: dict[str, str] = {
    "Module": "abstract base class: Module.forward is not implemented",
    "Container": "deprecated container base class (Container(**modules)) with no forward",
    "ModuleList": "container with no forward; its items are called by the owning module",
    "ModuleDict": "container with no forward; its items are called by the owning module",
    "ParameterList": "container of parameters with no forward",
    "ParameterDict": "container of parameters with no forward",
    "RNNBase": "base class of RNN/LSTM/GRU; has no forward of its own (its subclasses define it)",
    "RNNCellBase": "base class of RNNCell/LSTMCell/GRUCell; has no forward of its own",
    "LinearCrossEntropyOptions": "not an nn.Module: a configuration object for LinearCrossEntropyLoss(options=...)",
}
if not hasattr(nn, "LinearCrossEntropyOptions"):  # torch before 2.13
    del NOT_CALLABLE["LinearCrossEntropyOptions"]
