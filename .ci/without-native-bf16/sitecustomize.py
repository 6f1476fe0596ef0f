"""Run the suite as a CPU without native bf16 (e.g. a Cascade Lake Xeon) would, on one that has it (issue 15).

    PYTHONPATH=.ci/without-native-bf16 python -m pytest -q tests

Python imports this file at start-up in every process that inherits PYTHONPATH (the suite's child processes too)
and makes torch's CPU-capability probes, which `macrl_hub.precision.cpu_bf16_flags` reads, answer False, so
`--precision auto` resolves to fp32 as it would there. Explicit `--precision bf16` still runs natively here (on a
CPU without native bf16 it is emulated: slower, same numerics up to kernel differences).
"""
import torch

torch.cpu._is_amx_tile_supported = lambda: False
torch.cpu._is_avx512_bf16_supported = lambda: False
