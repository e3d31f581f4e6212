"""``mlcost prices``: the catalog in force, readable in an 80-column terminal.

The GPU name (the key) is never cut; a row's long source ("AWS p5.48xlarge via SkyPilot catalog v7")
and date go to numbered notes under the table. A price the user's catalog set is marked ``*`` and its
note names that file. Energy ($/kWh, and whether it is billed on top of the GPU price) follows, and a
spot or reserved price above on-demand is warned about: it is almost always a typo in a user file.
"""

from __future__ import annotations

from typing import Any

from mlcost.errors import ConfigError
from mlcost.names import PRICING_MODELS


def price_warnings(catalog: Any, names: list[str]) -> list[str]:
    """One line per spot or reserved price above the same type's on-demand price."""
    out = []
    for name in names:
        try:
            on_demand = catalog.gpu_hour_usd(name, "on_demand")
        except ConfigError:
            continue
        for pricing in ("spot", "reserved"):
            try:
                price = catalog.gpu_hour_usd(name, pricing)
            except ConfigError:
                continue
            if price > on_demand:
                where = catalog.price_source(name, pricing) or "the catalog"
                out.append(f"{name}: {pricing} ${price:.3f} is above on-demand ${on_demand:.3f} (from {where})")
    return out


def print_prices(catalog: Any, *, mig: bool, console: Any, errors: Any) -> None:
    from rich.table import Table

    names = [n for n in catalog.gpu_types if mig or ":" not in n]
    notes: dict[str, int] = {}  # source text -> note number
    table = Table(title="GPU prices, USD per GPU-hour", title_justify="left")
    table.add_column("GPU", no_wrap=True)
    for col in ("on-demand", "spot", "reserved", "mem GB", "src"):
        table.add_column(col, justify="right" if col != "src" else "left", no_wrap=True)
    user_marked = False
    for name in names:
        row = catalog.describe(name)
        cells = []
        for pricing in PRICING_MODELS:
            try:
                text = f"{catalog.gpu_hour_usd(name, pricing):.3f}"
            except ConfigError:
                text = "-"
            if text != "-" and catalog.user_file and catalog.price_source(name, pricing) == catalog.user_file:
                text += "*"
                user_marked = True
            cells.append(text)
        source = " ".join(x for x in (row.source, f"(as of {row.as_of})" if row.as_of else "") if x)
        mark = ""
        if source:
            mark = f"[{notes.setdefault(source, len(notes) + 1)}]"
        memory = catalog.memory_gb(name)
        table.add_row(name, *cells, f"{memory:g}" if memory else "-", mark)
    console.print(table)
    for source, n in notes.items():
        console.print(f"[{n}] {source}", highlight=False, soft_wrap=True)
    if user_marked:
        console.print(f"* set by your catalog {catalog.user_file}", highlight=False, soft_wrap=True)
    e = catalog.energy
    billed = "included in the GPU price" if e.included_in_gpu_price else "billed on top of the GPU price"
    console.print(f"Energy: ${e.usd_per_kwh:.3f}/kWh, {billed}", highlight=False)
    if catalog.user_fields.get("energy"):
        console.print(f"  from {catalog.user_file}", highlight=False, soft_wrap=True)  # a path: never broken
    elif e.source:
        console.print(f"  source: {e.source}", highlight=False)
    for line in price_warnings(catalog, names):
        errors.print(f"warning: {line}", highlight=False, soft_wrap=True)
