"""The OpenVINO CPU plugin's inference precision: what the `inference_precision` option asks
for, what this CPU gets, and what OpenVINO reports back.

Left alone, the plugin infers in bf16 wherever the CPU has AVX-512 BF16 or AMX, and in f32
elsewhere. bf16 keeps 8 bits of mantissa, so near-tied logits flip with the batch's shape and
batched greedy output no longer equals sequential. We therefore always pass the precision
explicitly and read it back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aios_serve.cpu_features import cpu_flags, has_native_bf16, reported_flags
from aios_serve.engine.generation.options import InferencePrecision

log = logging.getLogger("aios_serve.engine.generation")

HINT = "INFERENCE_PRECISION_HINT"


def auto_precision(has_amx: bool) -> str:
    """`auto`'s choice: bf16 where the CPU has AMX, f32 elsewhere.

    On Sapphire Rapids (AMX) bf16 decoded 1.7-3.0x faster than f32 (README, "OpenVINO's
    inference precision"). On AVX-512 BF16 without AMX (Zen 4) no f32/bf16 figure of this
    engine is measured, and on AVX2 there is no bf16: both keep f32.
    """
    return "bf16" if has_amx else "f32"


def prefix_caching_allowed(precision: str) -> bool:
    """Whether OpenVINO's prefix cache may run at this precision.

    Not at bf16: on Sapphire Rapids, OpenVINO GenAI 2026.4.1 with bf16 and the prefix cache on
    returned wrong tokens for concurrent requests that share cached blocks (teacher-forced
    against llama.cpp, top-1 agreement 85.5% and tokens up to 23 nats below llama.cpp's top-1;
    no position off by more than 1 nat with the cache off, at f32 with it on, or with one
    request at a time).
    """
    return precision != "bf16"


def resolve(option: InferencePrecision) -> str:
    """The precision to ask OpenVINO for: `f32` or `bf16`. bf16 on a CPU without native bf16
    falls back to f32 (the plugin would ignore it), with a warning."""
    if option == "auto":
        return auto_precision("amx_bf16" in cpu_flags())
    if option == "bf16" and not has_native_bf16():
        log.warning("inference_precision bf16 asked on a CPU without native bf16; using f32")
        return "f32"
    return option


def plugin_properties(precision: str) -> dict[str, str]:
    """The CPU plugin properties that set the precision."""
    return {HINT: precision}


def compiled_precision(properties: dict[str, object]) -> str:
    """The `INFERENCE_PRECISION_HINT` OpenVINO's CPU plugin reports for a model compiled with
    `properties` on this CPU (`f32`, `bf16`, `f16`).

    GenAI's pipeline keeps its CompiledModel to itself, so a one-MatMul model is compiled with
    the same properties and asked: the plugin resolves the hint per device, not per model.
    """
    import numpy as np
    import openvino as ov
    from openvino import opset13

    source = opset13.parameter([1, 8], np.float32)
    weight = opset13.constant(np.eye(8, dtype=np.float32))
    model = ov.Model([opset13.matmul(source, weight, False, False)], [source], "precision-probe")
    compiled = ov.Core().compile_model(model, "CPU", properties)
    return str(compiled.get_property(HINT).get_type_name())


@dataclass(frozen=True)
class PrecisionChoice:
    """What was asked, what OpenVINO compiled, and the CPU it decided on."""

    asked: InferencePrecision
    compiled: str
    cpu_flags: str

    def describe(self) -> str:
        return f"precision {self.compiled} (asked {self.asked}; CPU {self.cpu_flags})"


def choose(option: InferencePrecision) -> tuple[dict[str, str], PrecisionChoice]:
    """The plugin properties for `option` and the precision OpenVINO reports for them."""
    properties = plugin_properties(resolve(option))
    choice = PrecisionChoice(option, compiled_precision(dict(properties)), reported_flags())
    return properties, choice
