"""The active ControlNet units of a generation, read from the ControlNet extension's own state (design.md §12).

A1111 + sd-webui-controlnet (v1.1.4xx): its Script (title "ControlNet") builds ``latest_network`` (a UnetHook) in
``process()``, before any sampling pass; ``latest_network.control_params`` holds one ControlParams per enabled unit,
in the order of ``enabled_units``. Nothing here imports the extension: units are told apart by the name of their
``control_model_type``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from ..ldm.control_patch import CONTROLNET, T2I_ADAPTER

LLLITE = "lllite"
CONTROLNET_TYPES = ("ControlNet", "ControlLoRA", "InstantID", "ControlNetUnion")  # hook.py: is_controlnet
LLLITE_NOTE = ("HiDiffusion off for this pass: ControlNet-LLLite ({label}) keeps its conditioning at the token counts of "
               "the first call and hooks the attention projections, so neither RAU-Net nor MSW-MSA can run with it")


@dataclass(frozen=True)
class ControlUnit:
    kind: str  # CONTROLNET, T2I_ADAPTER or LLLITE
    model: object  # what the hook loop calls: param.control_model
    encoder: Optional[object]  # the cldm encoder inside a ControlNet, else None
    label: str  # the unit's model name, for notes and warnings


def controlnet_script(p):
    runner = getattr(p, "scripts", None)
    for script in getattr(runner, "alwayson_scripts", None) or ():
        try:
            if script.title() == "ControlNet" and hasattr(script, "latest_network"):
                return script
        except Exception:  # another extension's title() failing is not our business
            continue
    return None


def a1111_units(p) -> List[ControlUnit]:
    """The units the ControlNet extension will run in this generation's U-Net calls; [] without it."""
    script = controlnet_script(p)
    network = getattr(script, "latest_network", None)
    params = list(getattr(network, "control_params", None) or ())
    names = [getattr(unit, "model", "") for unit in getattr(script, "enabled_units", None) or ()]
    names = names if len(names) == len(params) else [""] * len(params)
    units = []
    for index, (param, name) in enumerate(zip(params, names), start=1):
        kind = _kind(getattr(getattr(param, "control_model_type", None), "name", ""))
        if kind is None:
            continue
        model = getattr(param, "control_model", None)
        if model is None:
            continue
        encoder = getattr(model, "control_model", None) if kind == CONTROLNET else None
        units.append(ControlUnit(kind, model, encoder, str(name) or f"unit {index} ({type(model).__name__})"))
    return units


def _kind(type_name: str) -> Optional[str]:
    if type_name in CONTROLNET_TYPES:
        return CONTROLNET
    if type_name == "T2I_Adapter":
        return T2I_ADAPTER
    if type_name == "Controlllite":
        return LLLITE
    return None  # IP-Adapter, reference-only, Revision, SparseCtrl, ...: the hook adds no residuals for them
