"""Instance prices and cost figures: an estimate before launch, the billed cost after.

The table holds on-demand SageMaker *training* prices in US East (us-east-1 and us-east-2 charge
the same for these types). Prices change and differ by region: the user overrides the table with
`price_per_hour_usd` (env CRPBOT_PRICE_PER_HOUR_USD), and every cost figure names its source.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICE_TABLE_SOURCE = "AWS public price list, SageMaker on-demand training, US East"
PRICE_TABLE_AS_OF = "2025-11-16"
ON_DEMAND_USD_PER_HOUR: dict[str, float] = {
    "ml.g5.xlarge": 1.408,
    "ml.g5.2xlarge": 1.515,
    "ml.g5.4xlarge": 2.03,
    "ml.g6.xlarge": 1.13,
}


@dataclass(frozen=True)
class Price:
    instance_type: str
    usd_per_hour: float | None  # None: not in the table and not overridden
    source: str

    def cost_usd(self, seconds: float, instance_count: int = 1) -> float | None:
        if self.usd_per_hour is None:
            return None
        return round(self.usd_per_hour * instance_count * seconds / 3600.0, 4)


def instance_price(instance_type: str, override_usd_per_hour: float = 0.0) -> Price:
    """The hourly price of one instance: the user's override, else the table, else unknown."""
    if override_usd_per_hour > 0:
        return Price(instance_type, override_usd_per_hour, "user override (price_per_hour_usd)")
    table_price = ON_DEMAND_USD_PER_HOUR.get(instance_type)
    if table_price is None:
        return Price(instance_type, None, f"{instance_type} is not in the built-in price table")
    return Price(instance_type, table_price, f"{PRICE_TABLE_SOURCE}, as of {PRICE_TABLE_AS_OF}")


def spot_savings_percent(training_seconds: int, billable_seconds: int) -> float | None:
    """SageMaker's own definition: the share of training time that was not billed."""
    if not training_seconds:
        return None
    return round(100.0 * (1.0 - billable_seconds / training_seconds), 1)
