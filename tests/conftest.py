"""Test-session setup.

Without a CUDA device, Triton kernels can only run under its CPU interpreter, and Triton reads
TRITON_INTERPRET when it is imported: set it here, before any test module imports triton.
(ops.py sends only CUDA tensors to the kernels, so nothing else changes on a CPU machine.)
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
