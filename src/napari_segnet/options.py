"""Typed settings: normalisation, instance labelling, CRF and model metadata.

Each setting has its default here and nowhere else. The frozen dataclasses check
their values when they are made, and turn into the plain dictionaries that model
files, ``model.meta`` and the keyword arguments of the public functions use, so
files written before these classes existed read exactly as before.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import SegNetError

NORMALIZATION_KINDS = ("percentile", "meanstd", "fixed", "none")
INSTANCE_MODES = ("auto", "boundary", "components")
TARGETS = ("instances", "semantic", "scribbles")


def _finite(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    """``value`` as a finite float within ``[lo, hi]``, or a :class:`SegNetError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise SegNetError(f"{name} must be a number, not {value!r}") from None
    value = float(value)
    if not math.isfinite(value):
        raise SegNetError(f"{name} must be a finite number, not {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        allowed = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise SegNetError(f"{name} must be {allowed}, not {value!r}")
    return value


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
        hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0 and value.dtype.kind in "iuf"
    )


def _from_mapping(cls, values: dict[str, Any] | None, what: str):
    """An instance of dataclass ``cls`` from a dict whose keys must be its fields."""
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise SegNetError(f"unknown {what} option(s) {unknown}; allowed: {sorted(names)}")
    return cls(**values)


@dataclass(frozen=True)
class Normalization:
    """How raw intensities become network input.

    ``"percentile"`` maps the ``low`` percentile to 0 and the ``high`` one to 1 (per
    channel and time point); ``"meanstd"`` subtracts the mean and divides by the
    standard deviation (same grouping; bioimage.io's ``zero_mean_unit_variance``);
    ``"fixed"`` computes ``(x - offset) * scale``; ``"none"`` passes the values through.
    """

    kind: str = "percentile"
    low: float = 1.0
    high: float = 99.8
    offset: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in NORMALIZATION_KINDS:
            raise SegNetError(f"unknown normalisation kind {self.kind!r}")
        lo = _finite("normalisation low percentile", self.low, 0.0, 100.0)
        hi = _finite("normalisation high percentile", self.high, 0.0, 100.0)
        if self.kind == "percentile" and lo >= hi:
            raise SegNetError("the low normalisation percentile must be below the high one")
        object.__setattr__(self, "low", lo)
        object.__setattr__(self, "high", hi)
        object.__setattr__(self, "offset", _finite("normalisation offset", self.offset))
        object.__setattr__(self, "scale", _finite("normalisation scale", self.scale))

    @classmethod
    def from_dict(cls, spec: dict[str, Any] | None) -> Normalization:
        """From the dict stored in ``model.meta["normalization"]`` (None: the default)."""
        if spec is None:
            return cls()
        if not isinstance(spec, dict):
            raise SegNetError(f"a normalisation must be a dict, not {type(spec).__name__}")
        return _from_mapping(cls, spec, "normalisation")

    def to_dict(self) -> dict[str, Any]:
        """The dict stored in model files: only the fields its kind uses."""
        if self.kind == "percentile":
            return {"kind": "percentile", "low": self.low, "high": self.high}
        if self.kind == "fixed":
            return {"kind": "fixed", "offset": self.offset, "scale": self.scale}
        return {"kind": self.kind}


@dataclass(frozen=True)
class InstanceOptions:
    """How :func:`~napari_segnet.label_instances` turns probabilities into objects.

    Attributes
    ----------
    mode : str
        ``"boundary"`` (background / interior / boundary classes, seeded watershed),
        ``"components"`` (connected components per class) or ``"auto"`` (boundary for
        three classes).
    interior_threshold : float
        Interior probability above which a pixel seeds an object.
    foreground_threshold : float
        Interior + boundary probability above which a pixel belongs to an object.
    min_size : int or None
        Smallest object kept, in pixels (None: 8 in 2D, 27 in 3D).
    split_touching : bool
        ``"components"`` mode: split touching convex objects at distance-map saddles.
    min_distance : int
        Minimum distance between split seeds.
    """

    mode: str = "auto"
    interior_threshold: float = 0.5
    foreground_threshold: float = 0.5
    min_size: int | None = None
    split_touching: bool = False
    min_distance: int = 5

    def __post_init__(self) -> None:
        if self.mode not in INSTANCE_MODES:
            raise SegNetError(f"mode must be 'auto', 'boundary' or 'components', not {self.mode!r}")
        for name in ("interior_threshold", "foreground_threshold"):
            object.__setattr__(self, name, _finite(name, getattr(self, name), 0.0, 1.0))
        if self.min_size is not None:
            object.__setattr__(self, "min_size", int(_finite("min_size", self.min_size, 0)))
        object.__setattr__(self, "min_distance", int(_finite("min_distance", self.min_distance, 1)))
        object.__setattr__(self, "split_touching", bool(self.split_touching))

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> InstanceOptions:
        return _from_mapping(cls, values, "instance")

    def replace(self, **changes: Any) -> InstanceOptions:
        """A copy with ``changes`` applied (unknown names are an error)."""
        return _from_mapping(type(self), {**dataclasses.asdict(self), **changes}, "instance")

    def changed(self) -> dict[str, Any]:
        """The options that differ from the defaults (what model files store)."""
        default = InstanceOptions()
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }

    def min_size_for(self, ndim: int) -> int:
        return (8 if ndim == 2 else 27) if self.min_size is None else int(self.min_size)


@dataclass(frozen=True)
class CRFOptions:
    """Dense CRF parameters (their meaning is pydensecrf's; see :func:`refine_crf`)."""

    n_iter: int = 5
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0

    def __post_init__(self) -> None:
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value) and value > 0):
                raise SegNetError(f"{name} must be a positive number, not {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("gaussian_compat", "bilateral_compat"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value) and value >= 0):
                raise SegNetError(f"{name} must be a non-negative number, not {value!r}")
            object.__setattr__(self, name, float(value))
        n = self.n_iter
        if not _is_number(n) or not math.isfinite(n) or int(n) != n or n < 0:
            raise SegNetError(f"n_iter must be a non-negative integer, not {n!r}")
        object.__setattr__(self, "n_iter", int(n))

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> CRFOptions:
        return _from_mapping(cls, values, "CRF")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelMeta:
    """A typed, read-only view of ``model.meta`` (the dict saved in model files).

    Attributes
    ----------
    classes : tuple of str
        Output class names, background first.
    target : str
        What the model was trained for: ``"instances"``, ``"semantic"`` or
        ``"scribbles"``.
    normalization : Normalization
        How inputs are normalised.
    diameter : float or None
        Typical object diameter (pixels) in the training data.
    pixel_size : tuple of float or None
        Pixel size of the training data, when known: one number, or one per spatial
        axis (Z first), in µm by convention. :func:`segment` given ``spacing=`` zooms
        images to it; ``ns.train(..., spacing=...)`` records it.
    trained : bool
        False for a freshly built network.
    instance_options : InstanceOptions
        Labelling settings stored with the model (e.g. fitted thresholds).
    training : dict
        Training settings and results, as recorded by :func:`train`.
    extra : dict
        Any other keys (name, description, scores, ...), kept as they are.
    """

    classes: tuple[str, ...]
    target: str = "semantic"
    normalization: Normalization = field(default_factory=Normalization)
    diameter: float | None = None
    pixel_size: tuple[float, ...] | None = None
    trained: bool = False
    instance_options: InstanceOptions = field(default_factory=InstanceOptions)
    training: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def default(cls, n_classes: int) -> ModelMeta:
        """The metadata of a fresh, untrained model with ``n_classes`` outputs."""
        return cls(classes=("background", *(f"class {i}" for i in range(1, n_classes))))

    @classmethod
    def from_dict(cls, meta: dict[str, Any]) -> ModelMeta:
        """Read a ``model.meta`` dict; keys this class does not name go to ``extra``."""
        if not isinstance(meta, dict):
            raise SegNetError(f"model metadata must be a dict, not {type(meta).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        diameter = meta.get("diameter")
        pixel_size = meta.get("pixel_size")
        return cls(
            classes=tuple(str(c) for c in meta.get("classes") or ()),
            target=str(meta.get("target", "semantic")),
            normalization=Normalization.from_dict(meta.get("normalization")),
            diameter=None if diameter is None else float(diameter),
            pixel_size=None if pixel_size is None else tuple(float(p) for p in pixel_size),
            trained=bool(meta.get("trained", False)),
            instance_options=InstanceOptions.from_dict(meta.get("instance_options")),
            training=dict(meta.get("training") or {}),
            extra={k: v for k, v in meta.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        """The dict form of a fresh model's ``meta`` (what :func:`build_model` sets)."""
        out: dict[str, Any] = {
            "classes": list(self.classes),
            "target": self.target,
            "normalization": self.normalization.to_dict(),
            "diameter": self.diameter,
            "pixel_size": None if self.pixel_size is None else list(self.pixel_size),
            "trained": self.trained,
        }
        changed = self.instance_options.changed()
        if changed:
            out["instance_options"] = changed
        if self.training:
            out["training"] = dict(self.training)
        return {**out, **self.extra}
