"""The pytest plugin, run on sample test files with `pytester` (in a subprocess, so each run's
tracker is its own): a deliberate leak fails with its buffers listed, a clean file passes, a
limit fails the test that crosses it, and each test's memory is summed up."""

from __future__ import annotations

import pytest

SAMPLE = '''
import pytest
import ttmem

t = ttmem.Tracker()
chip = t.register_device("n150", hw_id=0x7E57)
kept = []

@pytest.fixture(scope="module")
def weights():
    # A module's weights, loaded once: not the first test's leak.
    t.alloc(chip, "DRAM", 0x7000_0000, 5 << 20)
    yield
    t.free(chip, "DRAM", 0x7000_0000, 5 << 20)

@pytest.fixture
def scratch():
    t.alloc(chip, "L1", 0x9000, 4096)
    yield
    t.free(chip, "L1", 0x9000, 4096)

def test_clean(weights, scratch):
    t.alloc(chip, "DRAM", 0x1000, 1 << 20)
    t.free(chip, "DRAM", 0x1000, 1 << 20)

def test_leaky():
    with t.tag("layers.3.kv_cache"):
        t.alloc(chip, "DRAM", 0x4000_0000, 3 << 20)
    kept.append(0x4000_0000)

def test_big():
    # 900 MiB of a chip whose DRAM holds 8.25 GiB: over 5 %, under 12 %.
    t.alloc(chip, "DRAM", 0x8000_0000, 900 << 20)
    t.free(chip, "DRAM", 0x8000_0000, 900 << 20)
'''


@pytest.fixture
def sample(pytester: pytest.Pytester, env):
    pytester.makepyfile(test_sample=SAMPLE)
    return pytester


def test_a_leak_fails_with_its_buffers_and_a_clean_test_passes(sample):
    result = sample.runpytest_subprocess("--ttmem-leaks", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=1)
    out = result.stdout.str()
    # The leaky test fails (at teardown, after its fixtures let go) naming the buffer.
    assert "ERROR at teardown of test_leaky" in out
    assert "ended holding more device memory than it started with" in out
    assert "DRAM: +3.0 MiB (3145728 bytes)" in out
    assert "0x40000000" in out and "3.0 MiB" in out and "layers.3.kv_cache" in out
    # The fixtures' buffers are no leak: the module's weights are there before the test
    # starts, and the L1 scratch buffer is freed at teardown; test_clean passes.
    assert "test_clean" not in out.split("short test summary info")[-1]
    # The per-test summary.
    assert "ttmem device memory per test" in out
    assert "test_sample.py::test_leaky: DRAM@0:n150 end 8.0 MiB peak 8.0 MiB +3.0 MiB" in out


def test_without_the_flags_nothing_is_checked(sample):
    result = sample.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    assert "ttmem device memory per test" not in result.stdout.str()


def test_a_limit_fails_the_test_that_crosses_it(sample):
    result = sample.runpytest_subprocess("--ttmem-max", "dram=5%", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=1)
    out = result.stdout.str()
    assert "ERROR at teardown of test_big" in out
    # The module's 5 MiB of weights and test_leaky's 3 MiB count: the limit is on what the
    # process holds.
    assert "DRAM on device 0:n150 reached 908.0 MiB (952107008 bytes), over the limit DRAM=5% (422.4 MiB)" in out
    ok = sample.runpytest_subprocess("--ttmem-max", "dram=12%,l1=1M", "-p", "no:cacheprovider")
    ok.assert_outcomes(passed=3)
    small = sample.runpytest_subprocess("--ttmem-max", "dram=2M", "-p", "no:cacheprovider")
    small.assert_outcomes(passed=3, errors=3)
    assert "over the limit DRAM=2097152" in small.stdout.str()


@pytest.mark.parametrize("bad", ["dram", "dram=150%", "dram=lots", "=5%"])
def test_a_bad_limit_is_a_usage_error(sample, bad):
    result = sample.runpytest_subprocess("--ttmem-max", bad, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--ttmem-max" in result.stderr.str()
