"""The per-layer quantization config that the PTQ and QAT flows read: ``QuantSpec`` (how
one tensor is quantized), ``LayerConfig`` (a layer's weight and input specs) and
``QuantConfig`` (which layers get which, by name, by type or by default).

Introduced in ``10_post_training_quantization.ipynb``; used by ``ptq`` and ``qat``
(notebook 11). Built on ``nn``'s ``quantize_weight`` and ``fake_quantize_dynamic``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ._validate import check_bool, check_choice, check_int
from .nn import (
    ACTIVATION_GRANULARITIES,
    WEIGHT_GRANULARITIES,
    check_bits_or_format,
    fake_quantize_dynamic,
    quantizable_layers,
    quantize_weight,
)

__all__ = ["QuantSpec", "LayerConfig", "QuantConfig"]


@dataclass(frozen=True)
class QuantSpec:
    """How one tensor is quantized: ``bits`` (2-16, or ``"fp16"``/``"bf16"``), symmetric or
    asymmetric, and the granularity (weights: tensor/channel/group; activations: tensor/token).
    """

    bits: int | str = 8
    symmetric: bool = True
    granularity: str = "channel"
    group_size: int | None = None

    def __post_init__(self) -> None:
        fn = "QuantSpec"
        check_bits_or_format(self.bits, fn)
        check_bool(self.symmetric, "symmetric", fn)
        check_choice(self.granularity, "granularity",
                     WEIGHT_GRANULARITIES + ACTIVATION_GRANULARITIES[1:], fn)
        if (self.granularity == "group") != (self.group_size is not None):
            raise ValueError(f"{fn}: give group_size exactly when granularity is 'group'")
        if self.group_size is not None:
            check_int(self.group_size, "group_size", fn)

    @property
    def is_float(self) -> bool:
        return isinstance(self.bits, str)

    def bits_per_value(self) -> int:
        """Bits per stored value, without the scales (16 for the float formats)."""
        return 16 if self.is_float else self.bits

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` fake-quantized by this spec (weights)."""
        if self.granularity == "token":
            raise ValueError("QuantSpec: granularity 'token' is for activations, not weights")
        return quantize_weight(w, self.bits, granularity=self.granularity,
                               group_size=self.group_size, symmetric=self.symmetric)[0]

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` fake-quantized dynamically by this spec (activations)."""
        if self.granularity not in ACTIVATION_GRANULARITIES:
            raise ValueError(f"QuantSpec: granularity {self.granularity!r} is for weights; "
                             "activations use 'tensor' or 'token'")
        return fake_quantize_dynamic(x, self.bits, symmetric=self.symmetric,
                                     granularity=self.granularity)


@dataclass(frozen=True)
class LayerConfig:
    """The schemes of one layer: its weight and its input activation (None keeps float)."""

    weight: QuantSpec | None = QuantSpec()
    activation: QuantSpec | None = None

    def __post_init__(self) -> None:
        for part in ("weight", "activation"):
            v = getattr(self, part)
            if v is not None and not isinstance(v, QuantSpec):
                raise TypeError(f"LayerConfig: {part} must be a QuantSpec or None, "
                                f"got {type(v).__name__}")


class QuantConfig:
    """Which scheme each layer gets: ``by_name`` first, then ``by_type``, then ``default``; a
    ``None`` entry leaves the layer in float. ``resolve(model)`` checks every name against the
    model before any work and returns ``{layer name: LayerConfig}``."""

    def __init__(
        self,
        default: LayerConfig | None = LayerConfig(),
        *,
        by_type: Mapping[type, LayerConfig | None] | None = None,
        by_name: Mapping[str, LayerConfig | None] | None = None,
        skip: Iterable[str] = (),
    ) -> None:
        self.default = default
        self.by_type = dict(by_type or {})
        self.by_name = dict(by_name or {})
        self.skip = (skip,) if isinstance(skip, str) else tuple(skip)
        for where, v in ([("default", default)] + [(f"by_type[{k.__name__}]", v)
                         for k, v in self.by_type.items()]
                         + [(f"by_name[{k!r}]", v) for k, v in self.by_name.items()]):
            if v is not None and not isinstance(v, LayerConfig):
                raise TypeError(f"QuantConfig: {where} must be a LayerConfig or None, "
                                f"got {type(v).__name__}")
        for t in self.by_type:
            if not (isinstance(t, type) and issubclass(t, nn.Module)):
                raise TypeError(f"QuantConfig: by_type keys must be nn.Module classes, got {t!r}")

    def resolve(self, model: nn.Module) -> dict[str, LayerConfig]:
        layers = quantizable_layers(model, skip=self.skip)
        unknown = [n for n in self.by_name if n not in layers]
        if unknown:
            raise ValueError(
                f"QuantConfig: the model has no quantizable layer named "
                f"{', '.join(map(repr, unknown))}; it has {len(layers)}: "
                f"{', '.join(list(layers)[:8])}" + (", ..." if len(layers) > 8 else ""))
        out = {}
        for name, layer in layers.items():
            if name in self.by_name:
                cfg = self.by_name[name]
            else:
                cfg = next((c for t, c in self.by_type.items() if isinstance(layer, t)),
                           self.default)
            if cfg is not None:
                out[name] = cfg
        return out

    def __repr__(self) -> str:
        return (f"QuantConfig(default={self.default!r}, by_type={len(self.by_type)} entries, "
                f"by_name={len(self.by_name)} entries)")
