"""The benchmark still runs end to end (tiny sizes; its figures are not asserted, only their shape)."""

import json
import math

from hidiffusion_ext.devtools import bench

TINY = ["--width-scale", "0.1", "--repeat", "2", "--no-reference"]


def test_bench_writes_every_configuration_and_ratio(tmp_path, capsys):
    out = tmp_path / "sd15.json"
    bench.main(["--family", "sd15", "--size", "128", "--steps", "2", *TINY, "--json", str(out)])
    report = json.loads(out.read_text())
    assert set(report["configs"]) == {"baseline", "raunet", "mswmsa", "both"}
    assert all(len(c["runs_s"]) == 2 and c["min_s"] <= c["median_s"] <= c["max_s"] for c in report["configs"].values())
    assert all(math.isfinite(v) and v > 0 for v in report["ratios"].values())
    assert set(report["predicted"]) == {"raunet", "mswmsa", "both"}
    assert "both/baseline" in capsys.readouterr().out
    bench.main(["--table", str(out)])
    assert "| sd15 (32 ch) | 128² | 2 | 2 |" in capsys.readouterr().out


def test_bench_configs_keeps_baseline(tmp_path):
    out = tmp_path / "subset.json"
    bench.main(["--family", "sdxl", "--size", "128", "--steps", "1", *TINY, "--configs", "both", "--json", str(out)])
    assert set(json.loads(out.read_text())["configs"]) == {"baseline", "both"}


def test_overhead_reports_the_gap_and_the_copies(tmp_path):
    out = tmp_path / "overhead.json"
    bench.main(["--overhead", "--sizes", "64", "96", *TINY, "--json", str(out)])
    rows = json.loads(out.read_text())
    assert [(r["size"], r["shift_k"]) for r in rows] == [(64, 0), (64, 1), (96, 0), (96, 1)]
    assert all({"windowed", "attention_only", "block", "copies"} <= set(r["median_s"]) for r in rows)
