"""SDXL checks of the HiDiffusion extension on a running webui over its HTTP API (docs/forks.md, "SDXL").

Usage: venv/bin/python tools/sdxl-http-checks.py URL --model NAME [--inpaint-model NAME] [--controlnet NAME] [--only ROWS]
                                        [--steps 3] [--hr-scale 1.5] [--hr-steps 2] [--i2i-size 1280] [--no-uncond]
                                        [--warm-up] [--pid PID] [--log webui.log] [--max-minutes 120] [--timeout 3600]
  e.g. /path/to/a1111/venv/bin/python tools/sdxl-http-checks.py http://127.0.0.1:7860 --model random-sdxl.safetensors \
           --inpaint-model random-sdxl-inpaint.safetensors --controlnet control_random_sdxl --only ab \
           --pid "$(cat /path/to/a1111/webui.pid)" --log /path/to/a1111/webui.log

Rows (SDXL, Euler, seed 1); each posts stock, HiDiffusion on, stock again, and checks stock before == stock after:
  a  txt2img 1280x1280, auto plan ({"enabled": true}): aggressive below 4096 px
  b  hires fix 1024 -> 1536 (Latent, 2 + --hr-steps steps), apply_to auto: RAU-Net on the hires pass only
  c  img2img 1280x1280 from a drawn image, denoising 0.6
  d  inpaint with --inpaint-model and a mask: the plan turns the aggressive phase off for inpaint
  e  ControlNet (no preprocessor, as the host names it; an image hint) with RAU-Net: one control unit under RAU-Net geometry
  f  preset "SDXL Turbo" at 1024x1024 (Turbo native 512²), 4 steps, CFG 1
Prints per request: name | HTTP | seconds | sha256[:12] of the PNG | infotext HiDiffusion keys; with --pid, the webui's
peak RSS (VmHWM, same machine); with --log, the new `HiDiffusion ...` console lines and any traceback lines.
Any Python with Pillow runs it (a webui's venv python): rows c-e draw their init image, mask and hint with it.
The model is chosen through POST /sdapi/v1/options (once per model, not per request: an SDXL load takes minutes on CPU).
"""

import argparse
import base64
import hashlib
import io
import json
import os
import time

from webui_http import OutOfTime, WebuiHttp  # tools/, beside this script

HD_ON = [{"enabled": True}]
CONSOLE_MARKS = ("HiDiffusion", "Traceback", "Error", "could not be applied", "warning")


def drawn_image(size: int, mask: bool = False) -> str:
    """A PNG (base64) the webui can take as an init image, a ControlNet hint or, white in the middle, an inpaint mask."""
    from PIL import Image, ImageDraw  # the webui's venv has Pillow; only rows c-e need it

    image = Image.new("RGB", (size, size), "black" if mask else (40, 90, 160))
    draw = ImageDraw.Draw(image)
    if mask:
        draw.rectangle((size // 4, size // 4, size * 3 // 4, size * 3 // 4), fill="white")
    else:
        draw.ellipse((size // 4, size // 4, size * 3 // 4, size * 3 // 4), outline="white", width=size // 64)
        draw.rectangle((size // 8, size * 5 // 8, size * 3 // 8, size * 7 // 8), fill=(200, 120, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class Checks(WebuiHttp):
    def __init__(self, args):
        super().__init__(args.url, args.max_minutes, args.timeout)
        self.args = args
        self.log_pos = os.path.getsize(args.log) if args.log else 0
        self.loaded = None
        self.failures = []

    def use_model(self, name: str):
        if self.loaded == name:
            return
        self.wait_for_startup_load()
        start = time.monotonic()
        status, answer = self.http("POST", "/sdapi/v1/options", {"sd_model_checkpoint": name})
        print(f"model {name}: HTTP {status} {time.monotonic() - start:.0f}s {'' if status == 200 else answer}",
              flush=True)
        self.console()
        self.loaded = name

    def wait_for_startup_load(self, limit_s: float = 900):
        """A1111 answers HTTP while it still loads --ckpt in a thread; a checkpoint set then loads a second copy beside
        it (24.7 GB here, and "Cannot copy out of meta tensor" in the console). With --log, wait for "Model loaded"."""
        if not self.args.log:
            return
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            with open(self.args.log, errors="replace") as log:
                text = log.read()
            if text.rfind("Loading weights [") <= text.rfind("Model loaded in"):
                return
            time.sleep(5)
        print(f"the webui's startup load did not end in {limit_s:.0f}s; going on", flush=True)

    def no_preprocessor(self) -> str:
        """sd-webui-controlnet names it "none", Forge's built-in ControlNet "None" (it fails the unit on "none" and
        generates without it, HTTP 200): take the one /controlnet/module_list lists."""
        status, answer = self.http("GET", "/controlnet/module_list")
        listed = answer.get("module_list", []) if status == 200 and isinstance(answer, dict) else []
        return "None" if "None" in listed else "none"

    def peak_rss(self) -> str:
        try:
            with open(f"/proc/{self.args.pid}/status") as status:
                return next(line.split(":")[1].strip() for line in status if line.startswith("VmHWM"))
        except (OSError, StopIteration, TypeError):
            return "-"

    def console(self):
        """The webui's new console lines that matter here, verbatim."""
        if not self.args.log:
            return
        with open(self.args.log, errors="replace") as log:
            log.seek(self.log_pos)
            text = log.read()
            self.log_pos = log.tell()
        for line in text.splitlines():
            if any(mark in line for mark in CONSOLE_MARKS):
                print("    console:", line.rstrip(), flush=True)

    def post(self, name: str, path: str, body: dict):
        start = time.monotonic()
        status, answer = self.http("POST", path, body)
        seconds = time.monotonic() - start
        sha, keys = None, ""
        if status == 200 and isinstance(answer, dict) and answer.get("images"):
            sha = hashlib.sha256(base64.b64decode(answer["images"][0])).hexdigest()[:12]
            info = json.loads(answer["info"]).get("infotexts", [""])[0].replace("\n", ", ")
            keys = "; ".join(p.strip() for p in info.split(",") if "HiDiffusion" in p)
        else:
            keys = str(answer)[:600]
        print(f"{name} | HTTP {status} | {seconds:.0f}s | {sha} | {keys} | peak RSS {self.peak_rss()}", flush=True)
        self.console()
        if status == 0:  # refused or dropped: the webui is gone (on a small machine, often killed for memory)
            raise SystemExit(f"no answer from {self.url}; stopping")
        return sha

    def row(self, name: str, path: str, body: dict, hd_on: dict, scripts: dict = None):
        """stock, on, stock again; scripts (e.g. ControlNet) go in all three."""
        scripts = scripts or {}
        stock = dict(body, alwayson_scripts=dict(scripts))
        on = dict(body, alwayson_scripts=dict(scripts, HiDiffusion={"args": hd_on}))
        if self.args.warm_up:  # A1111's first SDXL img2img after a model load differs from later ones by itself
            self.post(f"{name}: warm-up (not compared)", path, stock)
        before = self.post(f"{name}: stock", path, stock)
        with_hd = self.post(f"{name}: HiDiffusion", path, on)
        after = self.post(f"{name}: stock again", path, stock)
        same = before is not None and before == after
        print(f"{name}: stock before == after: {same}; on != stock: {with_hd is not None and with_hd != before}",
              flush=True)
        if not same or with_hd is None:
            self.failures.append(name)

    def run(self):
        a = self.args
        base = {"prompt": "a photo of a cat on a sofa", "negative_prompt": "", "seed": 1, "sampler_name": "Euler",
                "cfg_scale": 7, "steps": a.steps, "batch_size": 1, "n_iter": 1,
                # A1111's default live preview (Approx NN) downloads vaeapprox-sdxl.pt before sampling: fails offline
                "override_settings": {"live_previews_enable": False}}
        # A1111's "Ignore negative prompt during early sampling": 1 skips the negative pass on every step (one U-Net
        # call a step); sent either way, so a value left in the webui's config cannot change the run unseen
        base["override_settings"]["skip_early_cond"] = 1.0 if a.no_uncond else 0.0
        txt, img = "/sdapi/v1/txt2img", "/sdapi/v1/img2img"
        for row in a.only:
            model = a.inpaint_model if row == "d" else a.model
            if row == "d" and not model or row == "e" and not a.controlnet:
                print(f"{row}: skipped (needs {'--inpaint-model' if row == 'd' else '--controlnet'})", flush=True)
                continue
            self.use_model(model)
            if row == "a":
                self.row("a txt2img 1280", txt, dict(base, width=1280, height=1280), HD_ON)
            elif row == "b":
                hires = dict(base, width=1024, height=1024, steps=2, enable_hr=True, hr_scale=a.hr_scale,
                             hr_upscaler="Latent", hr_second_pass_steps=a.hr_steps, denoising_strength=0.6)
                self.row(f"b hires 1024->{int(1024 * a.hr_scale)}", txt, hires, [{"enabled": True, "apply_to": "auto"}])
            elif row in "cd":
                size = a.i2i_size
                # auto runs RAU-Net only above 1.5x SDXL's 1024² area: below that ask for it on every pass
                hd = HD_ON if size * size > 1.5 * 1024 * 1024 else [{"enabled": True, "apply_to": "both"}]
                body = dict(base, width=size, height=size, init_images=[drawn_image(size)], denoising_strength=0.6)
                if row == "c":
                    self.row(f"c img2img {size}", img, body, hd)
                else:
                    body.update(mask=drawn_image(size, mask=True), inpainting_fill=1, inpaint_full_res=False)
                    self.row(f"d inpaint {size}", img, body, hd)
            elif row == "e":
                unit = {"enabled": True, "module": self.no_preprocessor(), "model": a.controlnet, "weight": 1.0,
                        "image": drawn_image(1280), "resize_mode": "Just Resize", "control_mode": "Balanced"}
                self.row("e ControlNet 1280", txt, dict(base, width=1280, height=1280), HD_ON,
                         {"ControlNet": {"args": [unit]}})
            elif row == "f":
                body = dict(base, width=1024, height=1024, steps=4, cfg_scale=1)
                self.row("f Turbo preset 1024", txt, body, [{"enabled": True, "preset": "SDXL Turbo"}])
        print("failed rows:", ", ".join(self.failures) or "none", flush=True)
        return 1 if self.failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--model", required=True, help="checkpoint title or file name, as /sdapi/v1/sd-models lists it")
    parser.add_argument("--inpaint-model")
    parser.add_argument("--controlnet", help="ControlNet model name, as /controlnet/model_list lists it")
    parser.add_argument("--only", default="abcdef", help="rows to run, in this order, e.g. 'ae'")
    parser.add_argument("--steps", type=int, default=3,
                        help="steps of rows a, c, d, e (at 3 SDXL's aggressive plan pools step 0, its RAD phase needs 7+)")
    parser.add_argument("--hr-scale", type=float, default=1.5, help="row b's hires scale (1.25: a 1280² hires pass)")
    parser.add_argument("--hr-steps", type=int, default=2,
                        help="row b's hires steps (SDXL's aggressive plan pools from 3, runs RAD from 7)")
    parser.add_argument("--i2i-size", type=int, default=1280,
                        help="rows c and d; at or below 1254 px HiDiffusion is asked with apply_to both")
    parser.add_argument("--no-uncond", action="store_true",
                        help="A1111: skip the negative-prompt pass on every step (skip_early_cond 1), half the CPU time")
    parser.add_argument("--warm-up", action="store_true",
                        help="one stock request before each row's stock (A1111's first img2img after a load differs)")
    parser.add_argument("--pid", type=int, help="the webui's pid, for its peak RSS (VmHWM)")
    parser.add_argument("--log", help="the webui's console log, for the HiDiffusion lines")
    parser.add_argument("--max-minutes", type=float, default=120)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per HTTP call")
    try:
        return Checks(parser.parse_args()).run()
    except OutOfTime:
        print("out of time (--max-minutes)", flush=True)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
