"""The reference's thresholds (design.md §4.2 table), resolved from explicit step counts, and the class boundaries."""

import pytest

from hidiffusion_ext import HiDiffusionSettings
from hidiffusion_ext.core.presets import resolve

# N: (SD1 small conv, SD1 large conv/pool, SDXL aggressive conv/pool, SDXL large conv/pool, Turbo pool)
SPEC_TABLE = {
    4: ("0-0", "0-1/0-0", "none/0-0", "0-0/0-1", "0-1"),
    10: ("0-3", "0-6/0-2", "0-0/1-3", "0-2/0-6", "0-4"),
    20: ("0-7", "0-13/0-5", "0-2/3-7", "0-5/0-13", "0-9"),
    25: ("0-9", "0-16/0-6", "0-3/4-9", "0-6/0-16", "0-11"),
    30: ("0-11", "0-20/0-8", "0-3/4-11", "0-8/0-20", "0-14"),
    50: ("0-19", "0-34/0-14", "0-7/8-19", "0-14/0-34", "0-24"),
}


def spans(family, hw, steps, **settings):
    s = resolve(family, hw, steps, HiDiffusionSettings(**settings)).schedule

    def span(r):
        return "none" if not len(r) else f"{r.start}-{r.stop - 1}"

    return span(s.rad), span(s.pool)


@pytest.mark.parametrize("steps", SPEC_TABLE)
def test_reference_threshold_table(steps):
    sd1_small, sd1_large, xl_aggr, xl_large, turbo = SPEC_TABLE[steps]
    assert spans("sd15", (128, 128), steps)[0] == sd1_small
    assert spans("sd15", (128, 128), steps)[1] == "none"
    assert "/".join(spans("sd15", (256, 256), steps)) == sd1_large
    assert "/".join(spans("sdxl", (256, 256), steps)) == xl_aggr
    assert "/".join(spans("sdxl", (512, 512), steps)) == xl_large
    assert spans("sdxl_turbo", (128, 128), steps) == ("none", turbo)


def test_small_class_if_either_side_is_below_the_limit():
    assert resolve("sd15", (255, 4000), 10, HiDiffusionSettings()).size_class == "small"
    assert resolve("sd15", (256, 256), 10, HiDiffusionSettings()).size_class == "large"
    assert resolve("sdxl", (511, 900), 10, HiDiffusionSettings()).size_class == "small"


def test_large_sdxl_is_never_stale_aggressive():
    """design.md §9.3: the reference keeps aggressive mode from an earlier small run; resolving is stateless here."""
    settings = HiDiffusionSettings()
    assert resolve("sdxl", (256, 256), 50, settings).aggressive
    assert not resolve("sdxl", (512, 512), 50, settings).aggressive
    assert spans("sdxl", (512, 512), 50) == ("0-14", "0-34")


def test_overrides():
    assert spans("sd15", (128, 128), 20, t1=0.5, t2=0.25) == ("0-9", "0-4")
    assert spans("sdxl", (256, 256), 20, aggressive="off") == ("none", "0-7")
    assert spans("sdxl", (256, 256), 50, aggressive_ratio=0.1) == ("0-4", "5-19")
    assert spans("sdxl", (512, 512), 20, aggressive="on") == ("0-2", "3-13")
    assert not resolve("sdxl", (256, 256), 20, HiDiffusionSettings(), non_aggressive_model=True).aggressive
