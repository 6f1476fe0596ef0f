"""macrl_hub.runtime: freed activations stay mapped (no page faults on the next step's allocations)."""
import subprocess
import sys

import pytest

PROBE = r'''
import sys, torch
from macrl_hub.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
base = rss_mb()
x = torch.ones(256 * 2**20 // 4)  # 256 MB, touched
del x
print(rss_mb() - base)
'''


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc tuning is Linux-only')
@pytest.mark.parametrize('mode,kept', [('keep', True), ('stock', False)])
def test_freed_memory_stays_mapped_only_when_asked(mode, kept):
    out = subprocess.run([sys.executable, '-c', PROBE, mode], capture_output=True, text=True, check=True)
    retained_mb = float(out.stdout.strip().splitlines()[-1])
    if kept:
        assert retained_mb > 200, f'heap gave back {256 - retained_mb:.0f} MB despite keep_freed_memory()'
    else:
        assert retained_mb < 50, f'stock malloc kept {retained_mb:.0f} MB: the test cannot tell the settings apart'
