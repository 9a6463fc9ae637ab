"""Runs every sampler and scheduler of a running webui (A1111 >= 1.7 or Forge) with HiDiffusion on, over its HTTP API,
and reads the extension's console line for each request.

Usage: python tools/sampler-check.py URL --log PATH [--size 256] [--steps 4] [--t1 0.5] [--all] [--max-minutes 90]
                                     [--timeout 600] [--skip NAME]...
  e.g. python tools/sampler-check.py http://127.0.0.1:7860 --log ~/webui.log

Meant for your own idle webui on 127.0.0.1, started with --api and its console (stdout and stderr) written to PATH:
the tool talks to URL only and reads PATH's lines appended since each request started.

Every request: txt2img at --size x --size, --steps, seed 1, cfg 7, HiDiffusion {"enabled": true, "apply_to": "both",
"t1": T1} ("both" runs RAU-Net at any size; SD1.5 small class: T1 is the RAD fraction, T2 pooling, 0). By default each
sampler (GET /sdapi/v1/samplers) with scheduler Automatic, then each scheduler (GET /sdapi/v1/schedulers) with Euler;
--all runs every pair; --skip leaves out a sampler or scheduler, once per name (DPM adaptive can take 60+ U-Net
calls). A webui without the schedulers endpoint (older Forge) runs the samplers only, with no scheduler.

One row per request: sampler, scheduler, HTTP status, seconds, U-Net calls, RAD calls, pooled calls, windowed attention
calls, the planned RAD steps, how steps were found (noise level or call count; design.md §11.4) and any HiDiffusion
warning, skip or error line. A row fails on a non-200 answer, no HiDiffusion line in the log, 0 RAD calls while the
plan has RAD steps, or steps by call count. A failed request is sent again with HiDiffusion off, to tell a sampler
the webui itself refuses from one HiDiffusion breaks. Ends with `N passed, N failed`; exit status 1 if any failed.
Bounded: each request by --timeout (a request with no answer stops the run: the webui would queue the rest behind
it), the whole run by --max-minutes.
"""

import argparse
import json
import os
import re
import time
from typing import NamedTuple

from webui_http import OutOfTime, WebuiHttp  # tools/, beside this script

SUMMARY = re.compile(r"HiDiffusion (?:first|hires) pass \d+x\d+: ")
CALLS = re.compile(r"(\d+) U-Net calls \((\d+) RAD, (\d+) pooled, (\d+) windowed attn\)")
PLAN = re.compile(r"RAD steps ([\w-]+), pooling steps [\w-]+ of (\d+)")
STEPS_BY = re.compile(r"steps by ([a-z ]+?)(?:;|$)")
ALARMS = ("Warning", "warning", "skipped", "Traceback", "Error")
OWN_CODE = re.compile(r"hidiffusion_ext|sd-webui-hidiffusion|scripts[/\\]hidiffusion\.py")  # its frames in a traceback
COLUMNS = (("sampler", 18), ("scheduler", 16), ("HTTP", 4), ("s", 6), ("calls", 5), ("RAD", 4), ("pool", 4),
           ("win", 5), ("plan", 11), ("steps by", 11))


class Parsed(NamedTuple):
    """What the extension's console line says; all None when the log had no such line."""

    line: str | None = None
    calls: int | None = None
    rad: int | None = None
    pooled: int | None = None
    windowed: int | None = None
    plan: str | None = None  # "0-1 of 4", "none of 4", "off" (RAU-Net off for the pass)
    steps_by: str | None = None


class Row(NamedTuple):
    sampler: str
    scheduler: str
    status: int  # 0: no HTTP answer
    seconds: float
    parsed: Parsed
    warnings: list
    note: str  # why the webui answered an error, once checked without HiDiffusion


def parse_summary(lines: list) -> Parsed:
    line = next((line for line in lines if SUMMARY.search(line)), None)
    if line is None:
        return Parsed()
    line = line[SUMMARY.search(line).start():]  # drop a progress bar the same console line may start with
    calls, plan, steps_by = CALLS.search(line), PLAN.search(line), STEPS_BY.search(line)
    counts = [int(n) for n in calls.groups()] if calls else [None] * 4
    plan_text = f"{plan.group(1)} of {plan.group(2)}" if plan else ("off" if "RAU-Net off" in line else None)
    return Parsed(line, *counts, plan_text, steps_by.group(1) if steps_by else None)


def alarms(lines: list) -> list:
    return [line.strip() for line in lines
            if "HiDiffusion" in line and any(word in line for word in ALARMS) and not SUMMARY.search(line)]


def failure(row: Row) -> str:
    """Why the row failed; "" when it passed."""
    parsed = row.parsed
    if row.status != 200:
        return f"HTTP {row.status or 'no answer'}" + (f" ({row.note})" if row.note else "")
    if parsed.line is None:
        return "no HiDiffusion line in the log"
    if parsed.plan and not parsed.plan.startswith(("none", "off")) and parsed.rad == 0:
        return f"0 RAD calls while the plan has RAD steps {parsed.plan}"
    if parsed.steps_by and "call count" in parsed.steps_by:
        return f"steps by {parsed.steps_by}: no sampler schedule seen"
    return ""


def show(value) -> str:
    return "-" if value is None else str(value)


def format_row(row: Row) -> str:
    parsed = row.parsed
    cells = (row.sampler, row.scheduler, show(row.status or None), f"{row.seconds:.1f}", show(parsed.calls),
             show(parsed.rad), show(parsed.pooled), show(parsed.windowed), show(parsed.plan), show(parsed.steps_by))
    text = " ".join(cell.ljust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True))
    extra = row.warnings + ([f"FAIL: {failure(row)}"] if failure(row) else [])
    return text + (" | " + " | ".join(item[:200] for item in extra) if extra else "")


class LogTail:
    """The webui's console log, read from a remembered offset: only what a request appended."""

    def __init__(self, path: str):
        self.path = path

    def mark(self) -> int:
        return os.path.getsize(self.path)

    def lines_since(self, offset: int) -> list:
        with open(self.path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(offset if log.tell() >= offset else 0)  # a shorter file was rotated or truncated: read it all
            text = log.read().decode(errors="replace")
        return re.split(r"[\r\n]+", text)  # tqdm's progress bars end in \r, not \n


class Checker(WebuiHttp):
    def __init__(self, args):
        self.args = args
        super().__init__(args.url, args.max_minutes, args.timeout)
        self.log = LogTail(args.log)
        self.base = {"prompt": "a photo of a cat", "negative_prompt": "", "width": args.size, "height": args.size,
                     "steps": args.steps, "seed": 1, "cfg_scale": 7, "batch_size": 1, "n_iter": 1}
        self.hd = {"HiDiffusion": {"args": [{"enabled": True, "apply_to": "both", "t1": args.t1}]}}
        self.rows = []

    def names(self, path: str, *keys: str) -> list | None:
        """What an endpoint lists, each by the first of keys it has; None when it has no list (older Forge: no schedulers)."""
        status, items = self.http("GET", path)
        if status != 200 or not isinstance(items, list):
            return None
        return [item if isinstance(item, str) else next(str(item[key]) for key in keys if item.get(key)) for item in items]

    def plan(self, samplers: list, schedulers: list | None) -> list:
        """(sampler, scheduler or None) pairs to run, in order, each once."""
        samplers = [name for name in samplers if name not in self.args.skip]
        if schedulers is None:
            return [(sampler, None) for sampler in samplers]
        schedulers = [name for name in schedulers if name not in self.args.skip]
        if self.args.all:
            return [(sampler, scheduler) for sampler in samplers for scheduler in schedulers]
        automatic = "Automatic" if "Automatic" in schedulers else None
        euler = "Euler" if "Euler" in samplers else samplers[0]
        pairs = [(sampler, automatic) for sampler in samplers]
        return pairs + [(euler, scheduler) for scheduler in schedulers if (euler, scheduler) not in pairs]

    def generate(self, sampler: str, scheduler: str | None, hd: bool):
        """(status, answer, seconds, log lines the request appended)."""
        body = dict(self.base, sampler_name=sampler, **({"scheduler": scheduler} if scheduler else {}))
        if hd:
            body["alwayson_scripts"] = self.hd
        offset, start = self.log.mark(), time.monotonic()
        status, answer = self.http("POST", "/sdapi/v1/txt2img", body, timeout=self.args.timeout)
        seconds = time.monotonic() - start
        lines = self.log.lines_since(offset)
        for _ in range(10):  # the console may be flushed a moment after the answer
            if status != 200 or any(SUMMARY.search(line) for line in lines):
                break
            time.sleep(0.3)
            lines = self.log.lines_since(offset)
        return status, answer, seconds, lines

    def why_refused(self, sampler: str, scheduler: str | None, answer, lines: list) -> str:
        """Tells an error of the webui's own from HiDiffusion's, by asking again with HiDiffusion off if need be."""
        message = error_text(answer)
        if "HiDiffusion" in message or any(OWN_CODE.search(line) for line in lines):
            return f"HiDiffusion's error: {message}"
        status, answer_off, _, _ = self.generate(sampler, scheduler, hd=False)
        if status == 200:
            return f"fails only with HiDiffusion on: {message}"
        return f"the webui refuses it without HiDiffusion too: {message or error_text(answer_off)}"

    def run_one(self, sampler: str, scheduler: str | None) -> Row:
        status, answer, seconds, lines = self.generate(sampler, scheduler, hd=True)
        note = ""
        if status == 0:
            note = error_text(answer)
        elif status != 200:
            note = self.why_refused(sampler, scheduler, answer, lines)
        row = Row(sampler, scheduler or "(none)", status, seconds, parse_summary(lines), alarms(lines), note)
        print(format_row(row), flush=True)
        return row

    def run(self) -> str:
        """Runs the pairs; returns why it stopped early, "" when every pair ran."""
        samplers = self.names("/sdapi/v1/samplers", "name")
        schedulers = self.names("/sdapi/v1/schedulers", "label", "name")  # labels: what the UI sends, the map takes both
        if not samplers:
            return f"{self.url}/sdapi/v1/samplers lists no samplers (is the webui up, with --api?)"
        if schedulers is None:
            print("INFO no /sdapi/v1/schedulers: samplers only, without a scheduler field", flush=True)
        pairs = self.plan(samplers, schedulers)
        a = self.args
        print(f"INFO {len(pairs)} requests to {self.url}: txt2img {a.size}x{a.size}, {a.steps} steps, seed 1, cfg 7, "
              f"HiDiffusion apply_to both, T1 {a.t1:g}", flush=True)
        print(" ".join(name.ljust(width) for name, width in COLUMNS) + " | warnings", flush=True)
        for index, (sampler, scheduler) in enumerate(pairs):
            row = self.run_one(sampler, scheduler)
            self.rows.append(row)
            if row.status == 0:  # the webui may still be working on it and would queue the rest behind it
                return f"no answer to {sampler} / {row.scheduler} ({row.note}); {len(pairs) - index - 1} requests not run"
        return ""


def error_text(answer) -> str:
    """The short message of an error answer (FastAPI's detail, A1111's errors)."""
    if isinstance(answer, dict):
        answer = answer.get("detail") or answer.get("errors") or answer.get("error") or json.dumps(answer)
    return " ".join(str(answer).split())[:300]


def summarise(rows: list, stopped: str) -> tuple:
    """Prints the summary; returns (passed, failed); stopping early counts as one failure."""
    failed = [(row, failure(row)) for row in rows if failure(row)]
    refused = sum(1 for row, _ in failed if "without HiDiffusion too" in row.note)
    warned = sum(1 for row in rows if row.warnings)
    by_noise = sum(1 for row in rows if row.parsed.steps_by == "noise level")
    print(f"\n{len(rows)} rows; {len(failed)} failed ({refused} refused by the webui itself, with or without HiDiffusion); "
          f"{by_noise} with steps by noise level; {warned} with HiDiffusion warnings", flush=True)
    for row, reason in failed:
        print(f"  FAIL {row.sampler} / {row.scheduler}: {reason}", flush=True)
    if stopped:
        print(f"  FAIL stopped early: {stopped}", flush=True)
    return len(rows) - len(failed), len(failed) + bool(stopped)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", help="the webui, e.g. http://127.0.0.1:7860")
    parser.add_argument("--log", required=True, help="the webui's console log (stdout and stderr)")
    parser.add_argument("--size", type=int, default=256, help="width and height of the images")
    parser.add_argument("--steps", type=int, default=4, help="sampling steps")
    parser.add_argument("--t1", type=float, default=0.5, help="HiDiffusion T1 (SD1.5: the fraction of steps with RAD)")
    parser.add_argument("--all", action="store_true", help="every sampler with every scheduler")
    parser.add_argument("--max-minutes", type=float, default=90, help="stop after this long, whatever is left")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one request may take")
    parser.add_argument("--skip", action="append", default=[], metavar="NAME", help="a sampler or scheduler (label) not to run")
    args = parser.parse_args()
    if not os.path.isfile(args.log):
        parser.error(f"--log {args.log}: no such file")
    checker = Checker(args)
    try:
        stopped = checker.run()
    except OutOfTime:
        stopped = f"--max-minutes {args.max_minutes} passed"
    passed, failed = summarise(checker.rows, stopped)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0

if __name__ == "__main__":
    raise SystemExit(main())
