"""A real TT-Metal process for ttmem's tests: opens a mock device (or a 1xN mesh), allocates
the tensors it is told to, prints one JSON line describing them, then obeys stdin: `free`
deallocates everything and prints `freed`, `exit` closes the device and exits, end of input
exits. Run with the mock environment tests/ttmetal_real.rs sets up.

    python workload.py '[["dram", [1, 1, 1024, 1024]], ["l1", [1, 1, 256, 256]]]'
"""
import json
import os
import sys

import ttnn


def main():
    specs = json.loads(sys.argv[1]) if len(sys.argv) > 1 else []
    mesh = os.environ.get("MESH_SHAPE")
    if mesh:
        rows, cols = map(int, mesh.split(","))
        device = ttnn.open_mesh_device(ttnn.MeshShape(rows, cols))
    else:
        device = ttnn.open_device(device_id=0)
    configs = {"dram": ttnn.DRAM_MEMORY_CONFIG, "l1": ttnn.L1_MEMORY_CONFIG}
    tensors = []
    described = []
    for kind, shape in specs:
        t = ttnn.allocate_tensor_on_device(ttnn.Shape(shape), ttnn.bfloat16, ttnn.TILE_LAYOUT, device, configs[kind])
        tensors.append(t)
        described.append({"kind": kind, "address": t.buffer_address(), "bytes": int(t.volume()) * 2})
    print(json.dumps({"pid": os.getpid(), "tensors": described}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "free":
            for t in tensors:
                ttnn.deallocate(t)
            tensors = []
            print("freed", flush=True)
        elif command == "exit":
            break
    ttnn.close_device(device)


if __name__ == "__main__":
    main()
