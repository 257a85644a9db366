"""Triton kernels for the hot ops of ``worldmodel/ops.py``.

Plain functions with the signatures of their references: ``ssm_step`` and ``ssd_scan_chunked``
(``ops.ssd_scan``), ``causal_conv1d`` and ``windowed_attention_stream`` (forward only). Which
one runs when is decided in one place, ``worldmodel.ops`` (``choose_kernel``). Each kernel file
reads kernel -> launcher -> autograd wrapper -> public function, and ``tests/test_kernels.py``
compares every one with its reference in ``worldmodel/ops.py``. This package imports nothing
from the rest of ``worldmodel``.

Without a GPU the kernels still run under Triton's CPU interpreter (``TRITON_INTERPRET=1``, set
before triton is imported), which is how the tests exercise them on a CPU machine.
"""

from __future__ import annotations

from .attention import windowed_attention_stream
from .causal_conv1d import causal_conv1d
from .ssd_scan import ssd_scan_chunked
from .ssm_step import ssm_step

__all__ = ["ssm_step", "ssd_scan_chunked", "causal_conv1d", "windowed_attention_stream"]
