"""Times allocate+deallocate pairs of one DRAM tile in a real TT-Metal process (ttnn on a mock
chip): prints a JSON list of ns per pair, one per sample of N pairs.

    python ttmetal_pairs.py N SAMPLES
"""
import json
import sys
import time

import ttnn

pairs, samples = int(sys.argv[1]), int(sys.argv[2])
device = ttnn.open_device(device_id=0)
shape = ttnn.Shape([1, 1, 32, 32])


def pair():
    t = ttnn.allocate_tensor_on_device(shape, ttnn.bfloat16, ttnn.TILE_LAYOUT, device, ttnn.DRAM_MEMORY_CONFIG)
    ttnn.deallocate(t)


for _ in range(500):  # warm up: caches, the first slot claim, lazy symbol resolution
    pair()
out = []
for _ in range(samples):
    start = time.perf_counter_ns()
    for _ in range(pairs):
        pair()
    out.append((time.perf_counter_ns() - start) / pairs)
print(json.dumps(out), flush=True)
ttnn.close_device(device)
