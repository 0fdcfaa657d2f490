"""Every mechanism as one record, so that tools can treat them all alike.

Each mechanism's configuration, case builder, edge configurations and
registration live in one home, the same in every section:
``reference/<section>/cases/<mechanism>.py``. It ends with one or more calls::

    register(Mechanism(
        name="attention.lsh", paper="Reformer (Kitaev et al., ICLR 2020)", section="attention",
        build=build,          # (seed, dtype, xp, config) -> Case
        forward=forward,      # (case) -> (outputs: dict of arrays, cache); sizes and switches from case.config
        backward=backward,    # (cache, cotangents: dict) -> grads: dict over inputs and params
        config=LshConfig,     # a reference.config.Config subclass; its defaults are the registered example
        defaults={"causal": True},  # a variant's defaults, where they differ from the class's
        edge_configs={"one_chunk": {"seq_len": 4}, ...},  # named overrides that expose real bugs
        realistic={"seq_len": 4096, ...},                  # a realistic size, for benchmarks
    ))

``Case.inputs`` and ``Case.params`` hold the differentiable arrays (their names
are distinct); ``Case.static`` holds everything else (integers, masks, trees,
rotations, samples); ``Case.config`` the validated configuration it was built
from. ``backward`` returns a gradient for every name in ``inputs`` and
``params``. Outputs whose dtype is not floating are not differentiated.

Modules register on import. :func:`all_mechanisms` imports every module under
the section packages (and their ``cases`` subpackages), so adding a mechanism
never means editing this file.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .config import Config

__all__ = ["Case", "Mechanism", "OracleRun", "oracle_run", "register", "get", "all_mechanisms", "select", "SECTIONS"]

SECTIONS = ("nn", "attention", "objectives", "embeddings", "architecture")


@dataclass(frozen=True)
class Case:
    """One seeded example: differentiable ``inputs`` and ``params``, and ``static`` data."""

    inputs: dict[str, Any]
    params: dict[str, Any]
    static: dict[str, Any] = field(default_factory=dict)
    #: The validated configuration the case was built from (set by :meth:`Mechanism.example`).
    config: Config | None = None

    def __post_init__(self) -> None:
        clash = set(self.inputs) & set(self.params)
        if clash:
            raise ValueError(f"input and parameter names must be distinct, both have {sorted(clash)}")

    @property
    def differentiable(self) -> dict[str, Any]:
        """Inputs then parameters, in one dict keyed by name."""
        return {**self.inputs, **self.params}

    def replace(self, values: dict[str, Any]) -> "Case":
        """A copy with some differentiable arrays replaced (used by finite differences)."""
        inputs = {k: values.get(k, v) for k, v in self.inputs.items()}
        params = {k: values.get(k, v) for k, v in self.params.items()}
        return dataclasses.replace(self, inputs=inputs, params=params)


@dataclass(frozen=True)
class Mechanism:
    """A mechanism of the oracle, in the protocol of DESIGN.md."""

    name: str
    paper: str
    section: str
    #: (seed, dtype, xp, config) -> Case: the seeded case at a validated configuration.
    build: Callable[..., Case]
    forward: Callable[[Case], tuple[dict[str, Any], Any]]
    backward: Callable[[Any, dict[str, Any]], dict[str, Any]]
    #: Extra tolerance context, e.g. ``{"float64": {"rtol": 1e-6}}``; most need none.
    tolerances: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Optional (case) -> None that raises if a finite-difference step has flipped a discrete
    #: decision (a hash bucket, an argmax); the checker calls it at every evaluation point.
    margin_check: Callable[[Case], None] | None = None
    #: The configuration record the case is built from (defaults: the registered example).
    config: type[Config] | None = None
    #: This variant's defaults where they differ from the configuration class's (``{"causal": True}``).
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: Named edge configurations (overrides of the defaults) chosen to expose real bugs.
    edge_configs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Overrides for a realistic size (what the benchmarks and checks "at the user's sizes" run).
    realistic: Mapping[str, Any] = field(default_factory=dict)
    #: Optional (cache) -> {name: array} of named intermediates in forward order (LSH buckets, sort
    #: permutation, per-round outputs and log-sum-exps; each layer's hidden states; attention
    #: probabilities), so a comparison can name the first that disagrees.
    intermediates: Callable[[Any], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.section not in SECTIONS:
            raise ValueError(f"section must be one of {SECTIONS}, got {self.section!r}")
        if not self.name.startswith(self.section + "."):
            raise ValueError(f"name {self.name!r} must start with its section {self.section!r}")

    def make_config(self, config: Config | Mapping[str, Any] | None = None, **changes: Any) -> Config | None:
        """The validated configuration from ``None`` (defaults), a dict of fields or a Config instance."""
        if self.config is None:
            if config or changes:
                raise ValueError(f"{self.name} has no configuration yet; got {dict(config or {}, **changes)}")
            return None
        if isinstance(config, Config):
            return self.config.make(config, **changes)
        return self.config.make({**self.defaults, **(config or {})}, **changes)

    def example(self, seed: int = 0, dtype: Any = None, xp: Any = None,
                config: Config | Mapping[str, Any] | None = None) -> Case:
        """The seeded case at ``config`` (defaults: float64 on NumPy, the registered configuration)."""
        if xp is None:
            from .backend import namespace

            xp = namespace("numpy")
        dtype = xp.float64 if dtype is None else dtype
        resolved = self.make_config(config)
        if resolved is None:
            return self.build(seed, dtype, xp)
        case = self.build(seed, dtype, xp, resolved)
        return dataclasses.replace(case, config=resolved)

    def edge_cases(self) -> dict[str, Config | None]:
        """Every named edge configuration, validated."""
        return {label: self.make_config(overrides) for label, overrides in self.edge_configs.items()}

    def run(self, case: Case) -> dict[str, Any]:
        """Outputs only (what the finite differences call)."""
        outputs, _ = self.forward(case)
        return outputs


@dataclass(frozen=True)
class OracleRun:
    """The oracle at one case: its outputs, seeded random cotangents and the gradients they give."""

    case: Case
    outputs: dict[str, Any]
    cotangents: dict[str, Any]
    grads: dict[str, Any]


def oracle_run(mechanism: Mechanism, case: Case, seed: int = 0) -> OracleRun:
    """Forward, :func:`~reference.random.random_cotangents` from ``seed``, backward."""
    from .random import random_cotangents

    outputs, cache = mechanism.forward(case)
    cotangents = random_cotangents(outputs, seed)
    return OracleRun(case, outputs, cotangents, mechanism.backward(cache, cotangents))


_REGISTRY: dict[str, Mechanism] = {}


def register(mechanism: Mechanism) -> Mechanism:
    """Add a mechanism; a second registration of the same name is an error."""
    old = _REGISTRY.get(mechanism.name)
    if old is not None and old is not mechanism:
        if (old.forward.__module__, old.forward.__qualname__) != (
            mechanism.forward.__module__,
            mechanism.forward.__qualname__,
        ):
            raise ValueError(f"mechanism {mechanism.name!r} is registered twice")
    _REGISTRY[mechanism.name] = mechanism
    return mechanism


def _import_all() -> None:
    for section in SECTIONS:
        package = importlib.import_module(f"reference.{section}")
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                module = importlib.import_module(f"reference.{section}.{info.name}")
                if info.ispkg:  # reference.<section>.cases
                    for sub in pkgutil.iter_modules(module.__path__):
                        if not sub.name.startswith("_"):
                            importlib.import_module(f"{module.__name__}.{sub.name}")


def all_mechanisms() -> dict[str, Mechanism]:
    """Every registered mechanism, sorted by section order then name."""
    _import_all()
    order = {s: i for i, s in enumerate(SECTIONS)}
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (order[kv[1].section], kv[0])))


def get(name: str) -> Mechanism:
    """The mechanism called ``name``; unknown names list what exists."""
    mechanisms = all_mechanisms()
    if name not in mechanisms:
        raise KeyError(f"no mechanism {name!r}; known: {', '.join(mechanisms)}")
    return mechanisms[name]


def select(names: list[str] | None) -> list[Mechanism]:
    """Mechanisms by name; a name also selects its registered variants (``attention.lsh`` → ``attention.lsh.causal``)."""
    mechanisms = all_mechanisms()
    if not names:
        return list(mechanisms.values())
    chosen: list[Mechanism] = []
    for name in names:
        found = [m for key, m in mechanisms.items() if key == name or key.startswith(name + ".")]
        if not found:
            raise KeyError(f"no mechanism {name!r}; known: {', '.join(mechanisms)}")
        chosen.extend(m for m in found if m not in chosen)
    return chosen
