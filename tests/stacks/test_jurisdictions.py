from stacks.jurisdictions import JURISDICTION_REGIONS, same_jurisdiction


def test_eu_excludes_regions_outside_the_union() -> None:
    assert not {"eu-west-2", "eu-central-2"} & JURISDICTION_REGIONS["EU"], (
        "London and Zurich are not in the EU"
    )


def test_ae_is_only_the_uae_region() -> None:
    assert JURISDICTION_REGIONS["AE"] == {"me-central-1"}, "me-south-1 is Bahrain, not the UAE"


def test_same_jurisdiction_rejects_a_mixed_pair() -> None:
    assert not same_jurisdiction("EU", "eu-central-1", "us-east-1"), "a US region passed as EU"
