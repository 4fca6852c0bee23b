"""A ttnn test suite on a mock chip, as a user's would be, for the ttmem pytest plugin
(`pytest --ttmem-leaks`): one clean test, one that leaks a DRAM tensor, and one that checks
`ttmem.memory_allocated()` against the tensor it allocates. The plugin and
`memory_allocated` see this process through TT-Metal's own counter files."""
import pytest
import ttmem
import ttnn

SHAPE = [1, 1, 1024, 1024]  # bfloat16: 2 MiB
kept = []


@pytest.fixture(scope="module")
def device():
    d = ttnn.open_device(device_id=0)
    yield d
    for t in kept:
        ttnn.deallocate(t)
    ttnn.close_device(d)


def tensor(device, config=ttnn.DRAM_MEMORY_CONFIG):
    return ttnn.allocate_tensor_on_device(ttnn.Shape(SHAPE), ttnn.bfloat16, ttnn.TILE_LAYOUT, device, config)


def test_clean(device):
    t = tensor(device)
    ttnn.deallocate(t)


def test_leaky(device):
    kept.append(tensor(device))


def test_memory_allocated_follows_the_tensor(device):
    before = ttmem.memory_allocated(0, "DRAM")
    t = tensor(device)
    assert ttmem.memory_allocated(0, "DRAM") == before + (2 << 20)
    assert ttmem.max_memory_allocated(0, "DRAM") >= before + (2 << 20)
    ttnn.deallocate(t)
    assert ttmem.memory_allocated(0, "DRAM") == before
    summary = ttmem.memory_summary()
    assert "source)" in summary and "DRAM" in summary, summary
