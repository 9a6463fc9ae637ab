"""Property: whatever arrives in any field, positional or named, parsing gives values inside each field's domain
or the 422 error that names the field, with a short message. Nothing else escapes (OverflowError, TypeError, ...)."""

import math
import subprocess
import sys

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hidiffusion_ext.webui import fields
from hidiffusion_ext.webui.arguments import SHOWN_VALUE_CHARS, HiDiffusionArgumentError, parse
from hidiffusion_ext.webui.fields import RATIO, SWITCH

EXAMPLES = 1500  # per test; CI time of the whole file is a few seconds

json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-10 ** 500, max_value=10 ** 500)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
                | st.text(alphabet="0123456789.eE+- naif", max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
# What Python callers and pasted text add to JSON: numpy scalars, bytes, huge strings, choices and their spellings.
choice_spellings = st.sampled_from([c for f in fields.FIELDS for c in (*f.choices, *f.aliases)]).flatmap(
    lambda c: st.sampled_from([c, c.upper(), f" {c} ", c.lower()]))
odd_values = (st.builds(np.float32, st.floats(width=32)) | st.builds(np.int64, st.integers(-2 ** 63, 2 ** 63 - 1))
              | st.builds(np.bool_, st.booleans()) | st.binary(max_size=8) | choice_spellings
              | st.sampled_from(["true", "False", " auto ", "", "0.5", "1e400", "-0", "nan", "inf", "1_0", "x" * 100_000]))
any_value = json_values | odd_values


def in_domain(field, value) -> bool:
    if field.kind == SWITCH:
        return isinstance(value, bool)
    if field.kind == RATIO:
        return value is None or (type(value) is float and not math.isnan(value) and 0.0 <= value <= 1.0)
    return value in field.choices


def check(raw_args):
    try:
        parsed = parse(raw_args)
    except HiDiffusionArgumentError as error:
        assert error.status_code == 422 and isinstance(error, ValueError)
        assert error.detail.startswith("HiDiffusion: ") and str(error) == error.detail
        assert any(f.name in error.detail for f in fields.FIELDS) or "unknown field" in error.detail
        assert len(error.detail) < 200 + SHOWN_VALUE_CHARS  # a 100 kB value never makes a 100 kB answer
        return
    for field in fields.FIELDS:
        assert in_domain(field, getattr(parsed, field.name)), (field.name, getattr(parsed, field.name))


quick = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@quick
@given(index=st.integers(0, len(fields.FIELDS) - 1), value=any_value)
def test_any_value_in_any_named_field(index, value):
    check([{fields.FIELDS[index].name: value}])


@quick
@given(values=st.lists(any_value, max_size=len(fields.FIELDS) + 2))
def test_any_positional_list(values):
    if values and isinstance(values[0], dict):
        values[0] = True  # a dict first is the named form, covered above and below
    check(values)


@quick
@given(named=st.dictionaries(st.sampled_from(fields.names()) | st.text(max_size=8) | st.integers(), any_value, max_size=4))
def test_any_named_dict(named):
    check([named])


def test_the_error_class_works_without_fastapi():
    """Outside a webui (no fastapi) the error is a plain ValueError with status_code/detail: it must import."""
    code = ("import sys; sys.modules['fastapi'] = None\n"
            "from hidiffusion_ext.webui.arguments import HiDiffusionArgumentError, parse\n"
            "try:\n    parse([{'t1': 10 ** 400}])\n"
            "except HiDiffusionArgumentError as e:\n"
            "    assert isinstance(e, ValueError) and e.status_code == 422, e\n"
            "    print(type(e).__mro__[1].__name__, e.detail)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("ValueError HiDiffusion: t1 must be from 0 to 1 (a fraction of the steps), "
                                     "got an integer of 401 digits")
