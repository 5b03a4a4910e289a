"""Reading compiled HLO: what a step really does once XLA has optimised it.

The jaxpr shows what we asked for; the compiled HLO shows what runs. Two questions are asked of
it in tests and benchmarks:

* :func:`vocab_sized_ops`: does a row-sparse step touch a whole [V] or [V, D] buffer (an O(V)
  step)? XLA inserts such copies silently when it cannot order a table's reads before its
  in-place write.
* :func:`hlo_collectives`: which collectives does a sharded step run, and how many bytes do they
  move per device?

Get the text with ``jax.jit(f).lower(*args).compile().as_text()``.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

_IN_PLACE_OPS = {
    "parameter",
    "get-tuple-element",
    "tuple",
    "bitcast",
    "while",
    "conditional",
    "scatter",
}


def _hlo_shape_and_opcode(line: str) -> tuple[str, str] | None:
    """``(result shape, opcode)`` of one HLO instruction line, or ``None`` for other lines."""
    _, eq, rest = line.partition(" = ")
    if not eq:
        return None
    end = 0
    if rest.startswith("("):  # a tuple shape: up to its matching parenthesis
        depth = 0
        for i, ch in enumerate(rest):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                end = i
                break
    end = rest.find(" ", end)
    m = re.match(r"([a-z0-9-]+)\(", rest[end + 1 :]) if end > 0 else None
    return (rest[:end], m.group(1)) if m else None


def vocab_sized_ops(hlo_text: str, vocab_size: int) -> list[str]:
    """Instructions of a compiled step that write a whole [V] or [V, D] buffer: O(V) work.

    A row-sparse step may only pass the tables through (parameters, tuples, loops) and scatter
    into them in place. A copy, fill or elementwise pass over a V-sized buffer means the step's
    cost grows with V; XLA inserts such copies silently when it cannot order a table's reads
    before its in-place write. The jaxpr cannot show them: read the compiled HLO
    (``jax.jit(f).lower(...).compile().as_text()``).

    Args:
      hlo_text: the optimized HLO module text.
      vocab_size: V (tables with V or V-1 leading rows are checked).

    Returns:
      The offending instruction lines (empty when the step is O(1) in V).
    """
    v_sized = re.compile(rf"\[({vocab_size}|{vocab_size - 1})(,\d+)*\]")
    bad = []
    for line in hlo_text.splitlines():
        parsed = _hlo_shape_and_opcode(line)
        if parsed is None or not v_sized.search(parsed[0]) or parsed[1] in _IN_PLACE_OPS:
            continue
        if parsed[1] == "fusion" and re.search(r"calls=%\S*scatter", line):
            continue  # a scatter fused with its update computation, still in place
        if parsed[1] == "custom-call" and "output_to_operand_aliasing" in line:
            continue  # an FFI kernel updating its operands in place (update="fused")
        bad.append(line.strip())
    return bad


COLLECTIVES = ("all-gather", "reduce-scatter", "all-to-all", "all-reduce", "collective-permute")
_DTYPE_BYTES = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
}


def _shape_bytes(text: str) -> int:
    total = 0
    for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", text):
        if dtype in _DTYPE_BYTES:
            total += _DTYPE_BYTES[dtype] * int(np.prod([int(x) for x in dims.split(",") if x]))
    return total


def hlo_collectives(hlo_text: str) -> list[dict[str, Any]]:
    """Collective ops of an HLO module text (``jitted.lower(...).compile().as_text()``).

    One dict per op: ``op`` (e.g. ``"all-gather"``), ``result`` (its shape text), and
    ``result_bytes`` / ``operand_bytes``, the sizes of its output and input buffers on one
    device for one call. Async ``-start``/``-done`` pairs count once (the ``-start``).
    """
    define = re.compile(
        r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*(?P<shape>\([^=]*?\)|\S+)\s+"
        r"(?P<op>[\w\-]+)\((?P<args>[^)]*)\)"
    )
    shapes: dict[str, str] = {}
    found = []
    for line in hlo_text.splitlines():
        m = define.match(line)
        if not m:
            continue
        shapes[m.group("name")] = m.group("shape")
        op = m.group("op")
        base = op[: -len("-start")] if op.endswith("-start") else op
        if base in COLLECTIVES:
            found.append((base, m.group("shape"), m.group("args")))
    ops = []
    for op, shape, args in found:
        operands = [a.strip().split()[-1].lstrip("%") for a in args.split(",") if a.strip()]
        ops.append(
            {
                "op": op,
                "result": shape,
                "result_bytes": _shape_bytes(shape),
                "operand_bytes": sum(_shape_bytes(shapes.get(a, "")) for a in operands),
            }
        )
    return ops
