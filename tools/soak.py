"""Soak and fault checks of the HiDiffusion extension on a running webui (A1111 >= 1.7 or Forge) over its HTTP API.

Usage: python tools/soak.py URL [--requests 50] [--size 320] [--steps 3] [--checkpoint-b NAME] [--max-minutes 60]
                            [--timeout 900]
  e.g. python tools/soak.py http://127.0.0.1:7860

Meant for your own idle webui on 127.0.0.1, started with --api: the tool talks to URL only, sends it interrupt and
skip (only once no other job runs), and loads a second checkpoint for one request (restored afterwards).

Every request: txt2img at --size x --size, seed 1, Euler, --steps. HiDiffusion on is {"enabled": true,
"apply_to": "both", "t1": 0.5, "t2": 0.5}: with "auto" RAU-Net runs only above 1.5x the model's native area (SD1.5:
640+ px), "both" makes it run at any size, so the default 320 px keeps a CPU webui at seconds per image, and T1/T2 0.5
put RAD and pooling on the first half of the steps, where the interrupts land. Raise --size to soak real sizes.

Checks, in order (each interrupt, skip and bad payload is followed by a stock request that must give the stock image
bit for bit): stock and on images; interrupt in the first pass; interrupt in the hires pass; skip with n_iter 2; a
catalogue of bad HiDiffusion args (4xx naming HiDiffusion, never 500); three clients at once (on, off, bad); img2img;
an odd 3:1 size; a second checkpoint; --requests requests alternating on and off, with memory and median times.

Prints `PASS|FAIL name: detail` per check (SKIP and INFO lines are not counted) and ends with `N passed, N failed`;
exit status 1 if any failed. Everything is bounded: each HTTP call by --timeout (the webui runs one generation at a
time, so a call may wait for others), the whole run by --max-minutes.
"""

import argparse
import base64
import hashlib
import json
import statistics
import threading
import time
import zlib
from typing import NamedTuple, Optional

from webui_http import OutOfTime, WebuiHttp  # tools/, beside this script

# "both": RAU-Net at any size, not only above 1.5x the native area; T1 = T2 = 0.5: RAD and pooling (SD1/SD2) on the
# first half of the steps, so at 2 steps too (the auto T1 0.4 gives int(2 * 0.4) = 0 RAD steps there)
HD_ON = {"enabled": True, "apply_to": "both", "t1": 0.5, "t2": 0.5}
POSITIONAL_DEFAULTS = [True, True, "Auto", "", "", "auto", "auto", "bicubic"]  # slots 1-8 of docs/api.md's table
BAD, OK, HOST = "4xx", "200 or 4xx", "not 500"  # expectations: refused naming HiDiffusion; either; the webui's own call

CATALOGUE = [  # (name, HiDiffusion args, expectation); add rows here
    ("unknown field", [{"enabled": True, "t3": 0.5}], BAD),
    ("t1 1.5", [{"enabled": True, "t1": 1.5}], BAD),
    ("t1 -0.1", [{"enabled": True, "t1": -0.1}], BAD),
    ("t1 'abc'", [{"enabled": True, "t1": "abc"}], BAD),
    ("t1 400-digit integer", [{"enabled": True, "t1": 10**399}], BAD),  # valid JSON; float() of it overflows
    ("t1 'nan'", [{"enabled": True, "t1": "nan"}], BAD),
    ("t1 'inf'", [{"enabled": True, "t1": "inf"}], BAD),
    ("t1 a list", [{"enabled": True, "t1": [0.5]}], BAD),
    ("t1 a dict", [{"enabled": True, "t1": {"value": 0.5}}], BAD),
    ("enabled 'maybe'", [{"enabled": "maybe"}], BAD),
    ("enabled 2", [{"enabled": 2}], BAD),
    ("preset 'SD9'", [{"enabled": True, "preset": "SD9"}], BAD),
    ("aggressive 5", [{"enabled": True, "aggressive": 5}], BAD),
    ("apply_to null", [{"enabled": True, "apply_to": None}], BAD),
    ("odd_windows 100 kB string", [{"enabled": True, "odd_windows": "x" * 100_000}], BAD),
    ("positional, bad type in slot 3", [True, True, True, 5], BAD),
    ("positional, longer than the table", [False, *POSITIONAL_DEFAULTS, "extra", 1], OK),  # extras are ignored
    ("args a string", "yes", BAD),  # the webui spreads it over the slots: enabled "y"
    ("args a dict", {"enabled": True}, HOST),  # A1111 indexes args as a list before the extension sees them
]


class Result(NamedTuple):
    status: int  # 0: no HTTP answer (connection error, timeout)
    sha: Optional[str]  # sha256 of the first image file
    pixels: Optional[str]  # sha256 of its pixel rows, so a different infotext alone never makes images differ
    image: Optional[str]  # base64, as the webui sent it
    text: str  # the error body, or "" for an image
    seconds: float

    def __str__(self):
        if self.sha:
            return f"HTTP {self.status} sha {self.sha[:12]} {self.seconds:.1f}s"
        return f"HTTP {self.status} {self.text[:300] or 'no image'}"


def pixel_digest(data: bytes) -> str:
    """sha256 of a PNG's decompressed IDAT data; of the whole file for other formats."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return hashlib.sha256(data).hexdigest()
    pos, idat = 8, b""
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        if data[pos + 4:pos + 8] == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length  # length, type, data, crc
    return hashlib.sha256(zlib.decompress(idat)).hexdigest()


def keep(box: dict, key: str, fn, *args):
    """Thread body: the answer lands in box[key]; a passed deadline leaves the key missing."""
    try:
        box[key] = fn(*args)
    except OutOfTime:
        pass


class Soak(WebuiHttp):
    def __init__(self, args):
        self.args = args
        super().__init__(args.url, args.max_minutes, args.timeout)
        self.passed = self.failed = 0
        self.base = {"prompt": "a photo of a cat", "negative_prompt": "", "width": args.size, "height": args.size,
                     "steps": args.steps, "seed": 1, "sampler_name": "Euler", "cfg_scale": 7, "batch_size": 1, "n_iter": 1}
        # /progress's sampling_step is the 0-based step just done: 1 leaves steps to go at 3+; with fewer, any running job
        self.min_step = 1 if args.steps >= 3 else 0

    def check(self, name: str, ok: bool, detail) -> bool:
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
        self.passed += ok
        self.failed += not ok
        return ok

    def payload(self, hd=None, **extra) -> dict:
        body = dict(self.base, **extra)
        if hd is not None:
            body["alwayson_scripts"] = {"HiDiffusion": {"args": hd}}
        return body

    def generate(self, body: dict, path: str = "/sdapi/v1/txt2img") -> Result:
        start = time.monotonic()
        status, answer = self.http("POST", path, body)
        seconds = time.monotonic() - start
        images = answer.get("images") if status == 200 and isinstance(answer, dict) else None
        if not images:
            return Result(status, None, None, None, answer if isinstance(answer, str) else json.dumps(answer), seconds)
        data = base64.b64decode(images[0])
        return Result(status, hashlib.sha256(data).hexdigest(), pixel_digest(data), images[0], "", seconds)

    def stock_again(self, after: str) -> bool:
        result = self.generate(self.payload())
        return self.check(f"stock after {after}", result.sha == self.stock, f"{result} (stock {self.stock[:12]})")

    def expect(self, name: str, result: Result, expectation: str):
        refused = 400 <= result.status < 500 and "HiDiffusion" in result.text
        if expectation == HOST and result.status == 500:  # raised by the webui before the extension runs
            print(f"SKIP {name}: the webui's own error, not the extension's: {result}", flush=True)
            return
        ok = {BAD: refused, OK: result.status == 200 or refused, HOST: result.status == 200 or 400 <= result.status < 500}
        self.check(name, ok[expectation], f"want {expectation}, got {result}")

    def ram_mb(self) -> Optional[float]:
        status, memory = self.http("GET", "/sdapi/v1/memory", timeout=60)
        used = memory.get("ram", {}).get("used") if status == 200 and isinstance(memory, dict) else None
        return used / 2**20 if isinstance(used, (int, float)) else None

    def job_state(self) -> dict:
        """/progress's state: job_count (0 idle, -1 starting), job_no, sampling_step, sampling_steps; {} if unknown."""
        status, progress = self.http("GET", "/sdapi/v1/progress?skip_current_image=true", timeout=30)
        return (progress.get("state") if status == 200 and isinstance(progress, dict) else None) or {}

    def during(self, body: dict, ready, action: str):
        """Sends body from a thread and POSTs /sdapi/v1/<action> once /progress shows ready(state): (Result, state when sent)."""
        while self.job_state().get("job_count", 0) != 0:  # someone else's job: the interrupt must reach ours only
            time.sleep(1)
        box, sent = {}, None
        worker = threading.Thread(target=keep, args=(box, "result", self.generate, body), daemon=True)
        worker.start()
        while worker.is_alive() and sent is None:
            state = self.job_state()
            if state.get("job_count", 0) > 0 and ready(state):  # job_count 0: idle, or the previous job's leftovers
                self.http("POST", f"/sdapi/v1/{action}", timeout=30)
                sent = state
            else:
                time.sleep(0.2)
        worker.join(self.left())
        if "result" not in box:
            raise OutOfTime
        return box["result"], sent

    def check_during(self, name: str, body: dict, ready, action: str):
        result, sent = self.during(body, ready, action)
        if sent is None:
            self.check(name, False, f"the request ended before that moment, nothing sent (raise --steps); {result}")
        else:
            where = f"job {sent['job_no']}/{sent['job_count']} step {sent['sampling_step']}/{sent['sampling_steps']}"
            self.check(name, result.status == 200, f"{action} at {where}; {result}")
        self.stock_again(name)

    def check_baseline(self) -> bool:
        stock, on = self.generate(self.payload()), self.generate(self.payload([HD_ON]))
        self.stock, self.on, self.on_pixels, self.stock_image = stock.sha, on.sha, on.pixels, stock.image
        if not self.check("stock image", stock.status == 200 and stock.sha is not None, stock):
            return False
        return self.check("HiDiffusion on differs from stock", on.sha is not None and on.pixels != stock.pixels, on)

    def in_first_pass(self, state: dict) -> bool:
        return state.get("job_no") == 0 and state.get("sampling_step", 0) >= self.min_step

    def in_hires_pass(self, state: dict) -> bool:
        # A1111's sample_hr_pass calls state.nextjob() before its sampler starts: job_no 1 is the hires pass
        return state.get("job_no", 0) >= 1 and state.get("sampling_step", 0) >= self.min_step

    def check_interrupts(self):
        hires = {"enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent", "denoising_strength": 0.5,
                 "hr_second_pass_steps": self.args.steps, **self.forge_hires}
        self.check_during("interrupt in the first pass", self.payload([HD_ON]), self.in_first_pass, "interrupt")
        self.check_during("interrupt in the hires pass", self.payload([HD_ON], **hires), self.in_hires_pass, "interrupt")
        self.check_during("skip with n_iter 2", self.payload([HD_ON], n_iter=2), self.in_first_pass, "skip")

    def check_catalogue(self):
        for name, args, expectation in CATALOGUE:
            self.expect(f"bad args: {name}", self.generate(self.payload(args)), expectation)
        self.stock_again("the bad args")

    def check_concurrent(self):
        bodies = {"on": self.payload([HD_ON]), "off": self.payload(), "bad": self.payload([{"enabled": True, "t1": 1.5}])}
        box = {}
        threads = [threading.Thread(target=keep, args=(box, key, self.generate, body), daemon=True)
                   for key, body in bodies.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.left())
        if len(box) < len(bodies):
            raise OutOfTime
        self.check("3 clients at once: on", box["on"].sha == self.on, f"{box['on']} (on {self.on[:12]})")
        self.check("3 clients at once: off", box["off"].sha == self.stock, f"{box['off']} (stock {self.stock[:12]})")
        self.expect("3 clients at once: bad", box["bad"], BAD)

    def check_img2img(self):
        body = dict(self.base, init_images=[self.stock_image], denoising_strength=0.5)
        on = self.generate(dict(body, alwayson_scripts={"HiDiffusion": {"args": [HD_ON]}}), "/sdapi/v1/img2img")
        self.check("img2img on", on.status == 200, on)
        first, second = (self.generate(body, "/sdapi/v1/img2img") for _ in range(2))
        self.check("img2img off twice, same image", first.sha is not None and first.sha == second.sha, f"{first}; {second}")
        self.stock_again("img2img")

    def check_odd_size(self):
        height = self.args.size // 8 * 8
        height += 8 if height % 64 == 0 else 0  # a multiple of 8 but not of 64: odd latent and window grids
        result = self.generate(self.payload([HD_ON], width=3 * height, height=height))
        self.check(f"odd size {3 * height}x{height} on", result.status == 200 and result.sha is not None, result)
        self.stock_again("the odd size")

    def second_checkpoint(self) -> Optional[str]:
        if self.args.checkpoint_b:
            return self.args.checkpoint_b
        status, models = self.http("GET", "/sdapi/v1/sd-models", timeout=60)
        current = (self.model or "").split(" [")[0]  # the title without its hash
        titles = [m.get("title", "") for m in models if isinstance(m, dict)] if status == 200 and isinstance(models, list) else []
        return next((title for title in titles if title.split(" [")[0] != current), None)

    def check_checkpoint(self):
        other = self.second_checkpoint()
        if other is None:
            print("SKIP checkpoint switch: the webui lists one model (give another with --checkpoint-b)", flush=True)
            return
        override = {"override_settings": {"sd_model_checkpoint": other}, "override_settings_restore_afterwards": True}
        result = self.generate(self.payload([HD_ON], **override))
        self.check(f"checkpoint {other} on", result.sha is not None and result.pixels != self.on_pixels,
                   f"{result} (model A on {self.on[:12]})")
        self.stock_again("the checkpoint switch")

    def check_soak(self, ram_start: Optional[float]):
        seconds, wrong = {"on": [], "off": []}, []
        for index in range(self.args.requests):
            kind = "on" if index % 2 else "off"
            result = self.generate(self.payload([HD_ON]) if kind == "on" else self.payload())
            seconds[kind].append(result.seconds)
            if result.sha != (self.on if kind == "on" else self.stock):
                wrong.append(f"#{index + 1} {kind} {result}")
        detail = f"{len(wrong)} wrong: " + "; ".join(wrong[:3]) if wrong else "every off = stock, every on = on sha"
        self.check(f"{self.args.requests} requests alternating off/on", not wrong, detail)
        ram_end = self.ram_mb()
        if ram_start is not None and ram_end is not None:
            print(f"INFO webui RAM used: start {ram_start:.0f} MB, end {ram_end:.0f} MB, {ram_end - ram_start:+.0f} MB")
        medians = {kind: f"{statistics.median(times):.1f}s" if times else "-" for kind, times in seconds.items()}
        print(f"INFO median seconds per request: on {medians['on']}, off {medians['off']}", flush=True)

    def run(self):
        status, options = self.http("GET", "/sdapi/v1/options", timeout=60)
        self.model = options.get("sd_model_checkpoint") if status == 200 and isinstance(options, dict) else None
        # Forge's hires pass reads hr_additional_modules, which its API leaves None (a TypeError, HTTP 500) unless sent
        forge = isinstance(options, dict) and "forge_additional_modules" in options
        self.forge_hires = {"hr_additional_modules": ["Use same choices"]} if forge else {}
        detail = f"checkpoint {self.model}" if self.model else f"HTTP {status} {str(options)[:300]}"
        if not self.check(f"{self.url} answers /sdapi/v1/options", self.model is not None, detail):
            return
        ram_start = self.ram_mb()
        print(f"INFO webui RAM used at start: {'unknown' if ram_start is None else f'{ram_start:.0f} MB'}", flush=True)
        if not self.check_baseline():
            return  # every later check compares with these images
        for step in (self.check_interrupts, self.check_catalogue, self.check_concurrent, self.check_img2img,
                     self.check_odd_size, self.check_checkpoint):
            step()
        self.check_soak(ram_start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", help="the webui, e.g. http://127.0.0.1:7860")
    parser.add_argument("--requests", type=int, default=50, help="requests in the final on/off run")
    parser.add_argument("--size", type=int, default=320, help="width and height of the images")
    parser.add_argument("--steps", type=int, default=3, help="sampling steps (3+ leaves room to interrupt mid-pass)")
    parser.add_argument("--checkpoint-b", help="a second checkpoint title; default: the first other one listed")
    parser.add_argument("--max-minutes", type=float, default=60, help="stop after this long, whatever is left")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one HTTP call may take")
    soak = Soak(parser.parse_args())
    try:
        soak.run()
    except OutOfTime:
        soak.check("deadline", False, f"--max-minutes {soak.args.max_minutes} passed; the checks after this were not run")
    print(f"{soak.passed} passed, {soak.failed} failed", flush=True)
    return 1 if soak.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
