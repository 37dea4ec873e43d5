"""Random distributions of site and saddle energies (eV), as written in a config file.

A value is either a plain number (a constant) or a table naming its distribution:
``{dist = "normal", mean, sigma}``, ``{dist = "uniform", low, high}`` or
``{dist = "discrete", values, weights}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

KINDS = ("constant", "normal", "uniform", "discrete")
_PARAMETERS = {
    "constant": ("value",),
    "normal": ("mean", "sigma"),
    "uniform": ("low", "high"),
    "discrete": ("values", "weights"),
}


@dataclass(frozen=True)
class Distribution:
    """One energy distribution; ``sample`` draws from it with the caller's generator."""

    kind: str
    value: float = 0.0
    mean: float = 0.0
    sigma: float = 0.0
    low: float = 0.0
    high: float = 0.0
    values: tuple[float, ...] = ()
    weights: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"dist must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.kind == "normal" and not self.sigma >= 0:
            raise ValueError("sigma must be >= 0")
        if self.kind == "uniform" and not self.high >= self.low:
            raise ValueError("high must be >= low")
        if self.kind == "discrete":
            if len(self.values) == 0 or len(self.values) != len(self.weights):
                raise ValueError("values and weights must be non-empty lists of equal length")
            if min(self.weights) < 0 or sum(self.weights) <= 0:
                raise ValueError("weights must be >= 0 with a positive sum")

    @classmethod
    def constant(cls, value: float) -> Distribution:
        return cls("constant", value=float(value))

    @classmethod
    def parse(cls, spec: float | Mapping) -> Distribution:
        """A distribution from a config value: a number or a ``{dist = ...}`` table.

        Raises ``ValueError`` (with the offending parameter named) on anything else.
        """
        if isinstance(spec, bool):
            raise ValueError("expected a number or a {dist = ...} table, not a boolean")
        if isinstance(spec, int | float):
            return cls.constant(spec)
        if not isinstance(spec, Mapping):
            raise ValueError(f"expected a number or a {{dist = ...}} table, not {spec!r}")
        kind = spec.get("dist")
        if kind not in _PARAMETERS:
            raise ValueError(f"dist must be one of {', '.join(KINDS)}, not {kind!r}")
        wanted = _PARAMETERS[kind]
        unknown = sorted(set(spec) - {"dist", *wanted})
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r} for dist = {kind!r}")
        missing = [name for name in wanted if name not in spec]
        if missing:
            raise ValueError(f"dist = {kind!r} needs {missing[0]!r}")
        params = {}
        for name in wanted:
            value = spec[name]
            if name in ("values", "weights"):
                if not isinstance(value, list | tuple) or not all(_is_number(v) for v in value):
                    raise ValueError(f"{name!r} must be a list of numbers")
                params[name] = tuple(float(v) for v in value)
            else:
                if not _is_number(value):
                    raise ValueError(f"{name!r} must be a number")
                params[name] = float(value)
        return cls(kind, **params)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` independent draws as float64."""
        if self.kind == "constant":
            return np.full(n, self.value)
        if self.kind == "normal":
            return rng.normal(self.mean, self.sigma, n)
        if self.kind == "uniform":
            return rng.uniform(self.low, self.high, n)
        p = np.asarray(self.weights) / np.sum(self.weights)
        return np.asarray(self.values)[rng.choice(len(self.values), size=n, p=p)]

    @property
    def expected(self) -> float:
        """The mean of the distribution."""
        if self.kind == "constant":
            return self.value
        if self.kind == "normal":
            return self.mean
        if self.kind == "uniform":
            return 0.5 * (self.low + self.high)
        return float(np.dot(self.values, self.weights) / np.sum(self.weights))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
