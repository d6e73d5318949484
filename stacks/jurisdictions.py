"""Which AWS regions belong to which jurisdiction, and the availability zones the stacks use.

Data only. The policy gate keeps its own copy of the same facts (the parts meet through the plan, not through
imports), so a mistake here is caught there.
"""

from collections.abc import Mapping

# Only regions whose data centres are inside the jurisdiction: me-south-1 is Bahrain, not the UAE; eu-west-2
# (London) and eu-central-2 (Zurich) are outside the EU.
JURISDICTION_REGIONS: Mapping[str, frozenset[str]] = {
    "AE": frozenset({"me-central-1"}),
    "EU": frozenset({"eu-central-1", "eu-west-1", "eu-west-3", "eu-north-1", "eu-south-1", "eu-south-2"}),
    "US": frozenset({"us-east-1", "us-east-2", "us-west-1", "us-west-2"}),
}


def regions_of(jurisdiction: str) -> frozenset[str]:
    """The regions of a jurisdiction; KeyError for an unknown jurisdiction."""
    return JURISDICTION_REGIONS[jurisdiction]


def same_jurisdiction(jurisdiction: str, *regions: str) -> bool:
    """True when every region lies in the jurisdiction."""
    allowed = JURISDICTION_REGIONS.get(jurisdiction, frozenset())
    return all(region in allowed for region in regions)
