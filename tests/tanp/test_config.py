"""TaNPConfig: round trip, validation, and the fields of manifests written by older code."""

from __future__ import annotations

import pytest

from tanp.config import RETIRED_OPTIONS, TaNPConfig


def test_config_round_trip_and_validation() -> None:
    config = TaNPConfig(num_items=10, decoder="gating_film", film_gamma_offset=1.0)
    assert TaNPConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown model_config fields"):
        TaNPConfig.from_dict({**config.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="decoder"):
        TaNPConfig(num_items=10, decoder="mlp")  # type: ignore[arg-type]


def _old_manifest_config(config: TaNPConfig) -> dict[str, object]:
    """`config` as a manifest written before the latent widths were renamed and the three
    options retired (every retired option at its old default)."""
    values: dict[str, object] = dict(config.to_dict())
    values["z1_dim"] = values.pop("latent_encoder_dim")
    values["z2_dim"] = values.pop("latent_hidden_dim")
    return {**values, **RETIRED_OPTIONS}


def test_an_older_manifest_config_reads_as_the_same_config() -> None:
    config = TaNPConfig(num_items=10, latent_encoder_dim=24, latent_hidden_dim=12)
    assert TaNPConfig.from_dict(_old_manifest_config(config)) == config


@pytest.mark.parametrize(
    ("name", "value"), [("affinity_skip", True), ("embedding_init_std", 0.02), ("logvar_init", -3)]
)
def test_a_retired_option_that_changed_the_model_is_refused(name: str, value: object) -> None:
    values = {**_old_manifest_config(TaNPConfig(num_items=10)), name: value}
    with pytest.raises(ValueError, match=f"{name}.*no longer has"):
        TaNPConfig.from_dict(values)


def test_a_renamed_field_given_twice_is_refused() -> None:
    values = {**TaNPConfig(num_items=10).to_dict(), "z1_dim": 32}
    with pytest.raises(ValueError, match="both 'z1_dim' and its new name"):
        TaNPConfig.from_dict(values)
