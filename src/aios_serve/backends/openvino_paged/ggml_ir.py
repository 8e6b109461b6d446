"""The IR whose MatMuls are ggml's: every MatMul weight that the file holds (any GGUF type
ggml's CPU backend multiplies) becomes a `GgmlMatMul` node (native/ggml_matmul.cpp) that reads
the file's own blocks, its rows in the IR's order, and multiplies them with the kernels of the
llama.cpp that serves the `llama.cpp` engine, in this CPU's interleaved layout where ggml has
one (ggml_layouts.py). The graph around them stays OpenVINO's (GenAI's IR of the frame,
exact_ir.py): attention, norms and the paged KV cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aios_serve.backends.openvino_paged.exact_ir import plans, save_put_back
from aios_serve.backends.openvino_paged.ggml_layouts import repacked
from aios_serve.backends.openvino_paged.mapped_file import release

OP_TYPE = ("GgmlMatMul", "aios")
"""The node's type name and opset, as native/ggml_matmul.cpp registers them."""


def holds_ggml_matmuls(xml: Path) -> bool:
    """Whether the IR has GgmlMatMul nodes (and needs the native library to be read)."""
    return f'type="{OP_TYPE[0]}"' in xml.read_text(errors="replace")


def _op_class() -> type:
    """The node as Python builds it (its shape and attributes); the native library computes it."""
    import openvino as ov

    class GgmlMatMul(ov.Op):  # type: ignore[misc]
        type_info = ov.DiscreteTypeInfo(*OP_TYPE)

        def __init__(
            self,
            inputs: list[Any] | None = None,
            ggml_type: int = 0,
            rows: int = 0,
            columns: int = 0,
            repacked: int = 0,
        ) -> None:
            self.ggml_type, self.rows, self.columns, self.repacked = ggml_type, rows, columns, repacked
            super().__init__(self, inputs)

        def validate_and_infer_types(self) -> None:
            shape = self.get_input_partial_shape(0)
            shape[shape.rank.get_length() - 1] = self.rows
            self.set_output_type(0, ov.Type.f32, shape)

        def clone_with_new_inputs(self, new_inputs: list[Any]) -> Any:
            return GgmlMatMul(new_inputs, self.ggml_type, self.rows, self.columns, self.repacked)

        def get_type_info(self) -> Any:
            return self.type_info

        def visit_attributes(self, visitor: Any) -> bool:
            shape = {"rows": self.rows, "columns": self.columns}
            visitor.on_attributes({"ggml_type": self.ggml_type, **shape, "repacked": self.repacked})
            return True

    return GgmlMatMul


def save_with_ggml_matmuls(
    base: Path, original: Path, frame: Path, target: Path, layouts: bool = True
) -> dict[str, int]:
    """Read `base` (GenAI's IR of `frame`), make every MatMul whose weight has a twin in
    `original` a GgmlMatMul of the original's blocks (with `layouts`, in this CPU's layout for
    them where ggml has one), and save the result as `target`; per GGUF type (`Q4_K repacked`),
    how many."""
    import openvino as ov
    from gguf import GGMLQuantizationType

    node_class = _op_class()
    model = ov.Core().read_model(str(base))
    weights_file = base.with_suffix(".bin")
    mapped = (original, frame, weights_file)
    every_type = frozenset(kind.name for kind in GGMLQuantizationType)
    counts: dict[str, int] = {}
    kept: list[Any] = []
    for plan in plans(model, original, frame, every_type, mapped):
        rows = np.asarray(plan.tensor.data).view(np.uint8).reshape(plan.rows, -1)
        blocks = rows[plan.order]  # a copy, in the IR's row order, alive until saved
        packed = repacked(plan.type_name, blocks) if layouts else None
        blocks = blocks if packed is None else packed
        kept.append(blocks)
        matmul = plan.weight.matmul
        node = node_class(
            [matmul.input_value(0), ov.op.Constant(ov.Tensor(blocks, shared_memory=True)).output(0)],
            plan.tensor.type_id,
            plan.rows,
            plan.cols,
            int(packed is not None),
        )
        node.set_friendly_name(matmul.get_friendly_name())
        for user in list(matmul.output(0).get_target_inputs()):
            user.replace_source_output(node.output(0))
        kind = plan.type_name if packed is None else f"{plan.type_name} repacked"
        counts[kind] = counts.get(kind, 0) + 1
        for path in mapped:
            release(path)
    return save_put_back(model, weights_file, target, counts, "ggml multiplies the file's own blocks")
