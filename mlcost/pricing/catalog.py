"""The price catalog: built-in, dated, sourced list prices, overridden or extended by the user's file.

Why a catalog and not constants: prices move and differ per contract, so every figure mlcost reports
must be recomputable later with other prices (what-if) — money is a pure function of Usage and a
PriceCatalog (see ``mlcost.pricing.cost``).
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlcost.config_files import read_config_file, validation_error
from mlcost.errors import ConfigError, UnknownGpuType
from mlcost.names import ENV_PRICES, PRICING_MODELS

Pricing = Literal["on_demand", "spot", "reserved"]
_MIG_PROFILE = re.compile(r"^(\d)g\.(\d+)gb$")
_MIG_SLICES = 7  # compute slices of every MIG-capable GPU in the catalog


class GpuPrice(BaseModel):
    """One GPU type's hourly prices. Missing prices are allowed (a user row may add only one) but
    asking for a missing one is an error, never a silent 0."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    on_demand: float | None = Field(default=None, ge=0)
    spot: float | None = Field(default=None, ge=0)
    reserved: float | None = Field(default=None, ge=0)
    memory_gb: float | None = Field(default=None, gt=0)
    aliases: list[str] = Field(default_factory=list)
    source: str | None = None
    as_of: str | None = None
    reserved_note: str | None = None
    note: str | None = None


class EnergyPrice(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    usd_per_kwh: float = Field(default=0.13, ge=0)
    included_in_gpu_price: bool = True
    source: str | None = None


class CatalogFile(BaseModel):
    """The schema shared by the built-in catalog and user catalogs."""

    model_config = ConfigDict(extra="forbid")

    energy: EnergyPrice | None = None
    gpus: dict[str, GpuPrice] = Field(default_factory=dict)
    mig_profiles: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("gpus")
    @classmethod
    def _names(cls, gpus: dict[str, GpuPrice]) -> dict[str, GpuPrice]:
        for name in gpus:
            parent, sep, profile = name.partition(":")
            if not parent.strip() or (sep and not _MIG_PROFILE.match(profile.strip().lower())):
                raise ValueError(
                    f"{name!r} is not a GPU type name; write a type ('H100') or a MIG profile of one "
                    "('H100:1g.10gb')"
                )
        return gpus

    @field_validator("mig_profiles")
    @classmethod
    def _profiles(cls, profiles: dict[str, list[str]]) -> dict[str, list[str]]:
        for parent, names in profiles.items():
            for name in names:
                match = _MIG_PROFILE.match(name.strip().lower())
                if not match or not 1 <= int(match.group(1)) <= _MIG_SLICES or int(match.group(2)) == 0:
                    raise ValueError(
                        f"{parent}: {name!r} is not a MIG profile; write '<slices>g.<GB>gb' with 1 to "
                        f"{_MIG_SLICES} slices and more than 0 GB (e.g. '1g.10gb')"
                    )
        return profiles


def _key(name: str) -> str:
    return name.strip().upper().replace("_", "-").replace(" ", "-")


class PriceCatalog:
    """Hourly GPU prices by type and pricing model, plus energy.

    >>> PriceCatalog.load().gpu_hour_usd("H100", pricing="spot")
    3.19

    MIG profiles are written ``"<GPU>:<profile>"`` (``"H100:1g.10gb"``). Unless the user's catalog
    prices a profile itself, it costs its parent's price times the larger of its compute share
    (N of 7 slices) and its memory share (GB of the parent's GB): an instance blocks both, so the
    scarcer of the two is what it takes away from other tenants.
    """

    def __init__(self, data: CatalogFile, sources: list[str]) -> None:
        self._data = data
        self.sources = sources
        self.energy = data.energy or EnergyPrice()
        self.user_file: str | None = None  # the user's catalog, when one was merged in
        self.user_fields: dict[str, set[str]] = {}  # GPU type (or "energy") -> fields the user's file set
        self._by_key: dict[str, str] = {}
        for name, price in data.gpus.items():
            for alias in (name, *price.aliases):
                self._by_key[_key(alias)] = name

    # construction -----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceCatalog:
        """The built-in catalog, overridden field by field by ``path`` or ``$MLCOST_PRICES``."""
        builtin = resources.files("mlcost.pricing").joinpath("builtin_prices.toml")
        with resources.as_file(builtin) as builtin_path:
            base = _parse(builtin_path)
        sources = [f"built-in ({builtin_path.name})"]
        path = path or os.environ.get(ENV_PRICES) or None
        if path is None:
            return cls(base, sources)
        user = _parse(Path(path))
        catalog = cls(_merge(base, user), [*sources, str(path)])
        catalog.user_file = str(path)
        for name, row in user.gpus.items():  # which prices are the user's: `mlcost prices` cites them
            target = catalog._by_key.get(_key(name), name)
            catalog.user_fields.setdefault(target, set()).update(row.model_fields_set)
        if user.energy is not None:
            catalog.user_fields["energy"] = set(user.energy.model_fields_set)
        for parent in user.mig_profiles:  # a profile is priced from its parent's row
            if _key(parent) not in catalog._by_key:
                raise ConfigError(
                    f"MIG profiles of {parent!r}, which is not a GPU type of the catalog; add [gpus.\"{parent}\"]",
                    source=str(path),
                    field=f"mig_profiles.{parent}",
                )
        return catalog

    # queries ----------------------------------------------------------------------------------
    @property
    def gpu_types(self) -> list[str]:
        """Every priceable name: GPU types and their MIG profiles."""
        names = list(self._data.gpus)
        for parent, profiles in self._data.mig_profiles.items():
            names += [f"{parent}:{p}" for p in profiles if f"{parent}:{p}" not in self._data.gpus]
        return sorted(names)

    def canonical(self, gpu_type: str) -> str:
        """The catalog's own spelling of ``gpu_type`` (aliases and case folded); raises UnknownGpuType."""
        direct = self._by_key.get(_key(gpu_type))
        if direct is not None:
            return direct
        parent, sep, profile = gpu_type.partition(":")
        name = self._by_key.get(_key(parent))
        if name is None:
            raise UnknownGpuType(gpu_type, list(self._data.gpus), source=", ".join(self.sources))
        return f"{name}:{profile.strip().lower()}" if sep else name

    def gpu_hour_usd(self, gpu_type: str, pricing: str = "on_demand", *, mig_profile: str | None = None) -> float:
        """USD per GPU-hour (or per MIG-instance-hour) of ``gpu_type`` under ``pricing``."""
        if pricing not in PRICING_MODELS:
            raise ConfigError(f"unknown pricing {pricing!r}; allowed: {', '.join(PRICING_MODELS)}", field="pricing")
        if mig_profile:
            gpu_type = f"{gpu_type.partition(':')[0]}:{mig_profile}"
        name = self.canonical(gpu_type)
        if name in self._data.gpus:
            price = getattr(self._data.gpus[name], pricing)
            if price is None:
                raise ConfigError(
                    f'no {pricing} price for {name}; add `{pricing} = <USD per GPU-hour>` under [gpus."{name}"]',
                    source=", ".join(self.sources),
                    field=f"gpus.{name}.{pricing}",
                )
            return price
        parent, _, profile = name.partition(":")
        return self.gpu_hour_usd(parent, pricing) * self.mig_share(parent, profile)

    def mig_share(self, parent: str, profile: str) -> float:
        """The fraction of ``parent`` that a MIG ``profile`` is billed as."""
        parent = self.canonical(parent)
        known = self._data.mig_profiles.get(parent, [])
        match = _MIG_PROFILE.match(profile.lower())
        if profile.lower() not in known or not match:
            raise UnknownGpuType(
                f"{parent}:{profile}", [f"{parent}:{p}" for p in known] or [parent], source=", ".join(self.sources)
            )
        slices, mem = int(match.group(1)), float(match.group(2))
        total_mem = self._data.gpus[parent].memory_gb
        memory_share = mem / total_mem if total_mem and mem else 0.0  # unknown: the compute share alone
        return min(1.0, max(slices / _MIG_SLICES, memory_share))

    def memory_gb(self, gpu_type: str) -> float | None:
        """Memory of a GPU type or MIG profile, used by right-sizing."""
        name = self.canonical(gpu_type)
        row = self._data.gpus.get(name)  # a MIG profile may be a row of its own ("X:1g.5gb")
        if row is not None and row.memory_gb is not None:
            return row.memory_gb
        profile = name.partition(":")[2]
        if profile:
            match = _MIG_PROFILE.match(profile)
            return float(match.group(2)) if match else None
        return row.memory_gb if row is not None else None

    def mig_profiles(self, gpu_type: str) -> list[str]:
        return list(self._data.mig_profiles.get(self.canonical(gpu_type).partition(":")[0], []))

    def price_source(self, gpu_type: str, pricing: str) -> str | None:
        """Where the ``pricing`` price of ``gpu_type`` comes from: the user's file when it set that
        price (of the type, or of a MIG profile's parent), else the catalog row's own source."""
        name = self.canonical(gpu_type)
        for key in (name, name.partition(":")[0]):
            if pricing in self.user_fields.get(key, set()):
                return self.user_file
            if key in self._data.gpus:
                break
        return self.describe(name).source

    def describe(self, gpu_type: str) -> GpuPrice:
        """The catalog row behind a price (source, date), for reports that must cite their prices."""
        name = self.canonical(gpu_type)
        row = self._data.gpus.get(name) or self._data.gpus.get(name.partition(":")[0])
        if row is None:  # canonical() found it, so it is a profile row whose parent is not listed
            raise UnknownGpuType(gpu_type, list(self._data.gpus), source=", ".join(self.sources))
        return row


def _parse(path: Path) -> CatalogFile:
    raw = read_config_file(path)
    try:
        return CatalogFile.model_validate(raw)
    except ValidationError as e:
        raise validation_error(e, source=str(path)) from e


def _merge(base: CatalogFile, user: CatalogFile) -> CatalogFile:
    """User rows override built-in rows field by field, matched by name or alias."""
    merged = base.model_copy(deep=True)
    lookup = {_key(alias): name for name, p in base.gpus.items() for alias in (name, *p.aliases)}
    for name, row in user.gpus.items():
        target = lookup.get(_key(name), name)
        if target in merged.gpus:
            current = merged.gpus[target].model_dump()
            current.update(row.model_dump(exclude_unset=True))
            merged.gpus[target] = GpuPrice.model_validate(current)
        else:
            merged.gpus[name] = row
    if user.energy is not None:
        energy = (merged.energy or EnergyPrice()).model_dump()
        energy.update(user.energy.model_dump(exclude_unset=True))
        merged.energy = EnergyPrice.model_validate(energy)
    merged.mig_profiles.update(user.mig_profiles)
    return merged
