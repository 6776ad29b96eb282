from dataclasses import dataclass

import pyarrow as pa
import pytest

from winnow.errors import ConfigError
from winnow.stage import Resources, Stage


@dataclass
class Scale(Stage):
    name = "scale"
    version = "1"
    resources = Resources(num_cpus=2)

    factor: int = 2
    enabled_flag: bool = False
    ratio: float = 0.5

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch


def test_fingerprint_depends_on_params_and_version_not_identity():
    assert Scale().fingerprint() == Scale().fingerprint()
    assert Scale(factor=3).fingerprint() != Scale().fingerprint()

    class Scale2(Scale):
        version = "2"

    assert Scale2().fingerprint() != Scale().fingerprint()


def test_with_params_coerces_strings_to_field_types():
    s = Scale().with_params(factor="5", enabled_flag="true", ratio="0.25")
    assert (s.factor, s.enabled_flag, s.ratio) == (5, True, 0.25)
    assert Scale().factor == 2  # the original is untouched


def test_with_params_names_unknown_parameter_and_bad_type():
    with pytest.raises(ConfigError, match=r"no parameter 'nope'.*factor"):
        Scale().with_params(nope=1)
    with pytest.raises(ConfigError, match=r"scale.factor.*int"):
        Scale().with_params(factor="many")


def test_resources_override_is_a_copy():
    base = Scale.resources
    changed = base.with_(num_cpus=0.5)
    assert base.num_cpus == 2 and changed.num_cpus == 0.5
