import pytest

from hidiffusion_ext import HiDiffusionSettings


@pytest.mark.parametrize(
    "field, value",
    [
        ("raunet", "yes"), ("mswmsa", 1), ("family", "sd3"), ("t1", 1.5), ("t1", -0.1), ("t2", "0.3"),
        ("t1", True), ("t2", float("nan")), ("aggressive", "maybe"), ("aggressive_ratio", 2), ("odd_windows", "skip"),
    ],
)
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        HiDiffusionSettings(**{field: value})


def test_defaults_are_auto():
    s = HiDiffusionSettings()
    assert (s.raunet, s.mswmsa, s.family, s.t1, s.t2, s.aggressive) == (True, True, "auto", None, None, "auto")


def test_replace_validates_and_rejects_unknown_fields():
    assert HiDiffusionSettings().replace(t1=0.5).t1 == 0.5
    with pytest.raises(ValueError, match="unknown HiDiffusion setting 'tt1'"):
        HiDiffusionSettings().replace(tt1=0.5)
