"""Triton kernels and their launch wrappers. Pure: no torch.library registration happens here.

Every kernel works on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1`` (how CI checks them).
Bytes and FLOPs per launch are documented next to each launcher for roofline checks on a GPU.
"""
