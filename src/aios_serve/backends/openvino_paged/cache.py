"""The KV cache tensors of a compiled paged model: one key and one value tensor per layer, each
[blocks, kv heads, block size, head size] (the CPU plugin's layout), in the element type the
compiled model asks for. They live in numpy arrays shared with OpenVINO, so copying a block
(copy on write) is a numpy slice assignment."""

from __future__ import annotations

from typing import Any

import numpy as np

GIB = 1 << 30


def cache_ports(compiled: Any) -> list[Any]:
    """The compiled model's key_cache.N / value_cache.N inputs."""
    return [
        port for port in compiled.inputs if port.get_any_name().startswith(("key_cache.", "value_cache."))
    ]


def cache_layout(compiled: Any) -> list[tuple[str, str, str]]:
    """Each cache input's name, element type and shape: two compiled models with the same
    layout can share one KvCache."""
    return [
        (port.get_any_name(), port.get_element_type().to_string(), str(port.get_partial_shape()))
        for port in cache_ports(compiled)
    ]


def block_bytes(compiled: Any) -> int:
    """Bytes one block takes across every layer's key and value tensors."""
    total = 0
    for port in cache_ports(compiled):
        dims = [d.get_length() for d in list(port.get_partial_shape())[1:]]
        total += int(np.prod(dims)) * port.get_element_type().size
    return total


def block_size(compiled: Any) -> int:
    """Tokens per block (the CPU plugin's value cache is [blocks, heads, block size, head size])."""
    value = next(p for p in cache_ports(compiled) if p.get_any_name().startswith("value_cache."))
    return int(list(value.get_partial_shape())[2].get_length())


def blocks_for_budget(compiled: Any, gigabytes: float) -> int:
    """How many blocks fit in `gigabytes` of cache (at least one)."""
    return max(1, int(gigabytes * GIB) // block_bytes(compiled))


class KvCache:
    """Every layer's key and value blocks, allocated once."""

    def __init__(self, compiled: Any, num_blocks: int) -> None:
        import openvino as ov

        self.num_blocks = num_blocks
        self.tensors: dict[str, Any] = {}
        self._arrays: list[np.ndarray] = []
        for port in cache_ports(compiled):
            dims = [num_blocks] + [d.get_length() for d in list(port.get_partial_shape())[1:]]
            tensor = ov.Tensor(port.get_element_type(), dims)
            self.tensors[port.get_any_name()] = tensor
            self._arrays.append(tensor.data)  # a view of the tensor's memory
        first = next(iter(self.tensors.values()))
        self.element_type = str(first.get_element_type().to_string())
        self.nbytes = sum(array.nbytes for array in self._arrays)

    @property
    def layers(self) -> int:
        return len(self._arrays) // 2

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy each (source, target) block in every key and value tensor."""
        if not pairs:
            return
        sources = [s for s, _ in pairs]
        targets = [t for _, t in pairs]
        for array in self._arrays:
            array[targets] = array[sources]
