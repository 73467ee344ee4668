"""The counter-based noise: known-answer vectors, independence of the batch, and normality."""

import numpy as np
import pytest
import torch
from scipy import stats

from seminfo.chain.noise import check_indices, normal, threefry2x32

# Threefry-2x32-20 known answers from Random123 (kat_vectors): (counter, key) -> output words
KAT = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344), (0xC4923A9C, 0x483DF7A0)),
]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_threefry_matches_random123(counter, key, expected):
    x0, x1 = threefry2x32(key[0], key[1], counter[0], counter[1])
    assert (int(x0), int(x1)) == expected


def test_threefry_vectorises_like_scalar_calls():
    ctr = torch.arange(6, dtype=torch.int64) * 0x9E3779B9 % 2**32
    x0, x1 = threefry2x32(7, 11, ctr, 3)
    for i, c in enumerate(ctr.tolist()):
        s0, s1 = threefry2x32(7, 11, c, 3)
        assert (int(s0), int(s1)) == (int(x0[i]), int(x1[i]))


def test_a_row_depends_only_on_seed_index_and_step():
    whole = normal(5, [0, 3, 17, 2**32 - 1], 9, 7)
    alone = torch.cat([normal(5, [i], 9, 7) for i in (0, 3, 17, 2**32 - 1)])
    assert torch.equal(whole, alone)
    assert whole.shape == (4, 7) and whole.dtype == torch.float64
    assert not torch.equal(normal(5, [3], 9, 7), normal(5, [3], 10, 7))  # another step
    assert not torch.equal(normal(5, [3], 9, 7), normal(6, [3], 9, 7))  # another seed
    assert torch.equal(normal(5, [3], 9, 7), normal(5, [3], 9, 8)[:, :7])  # dim only truncates


def test_out_of_range_keys_are_refused():
    with pytest.raises(ValueError):
        normal(2**32, [0], 0, 4)
    with pytest.raises(ValueError):
        normal(0, [-1], 0, 4)


def test_draws_are_standard_normal_and_independent():
    z = normal(1, np.arange(400), 3, 500).numpy()  # 200k draws
    flat = z.ravel()
    n = flat.size
    assert abs(flat.mean()) < 5 / np.sqrt(n)
    assert abs(flat.var() - 1) < 5 * np.sqrt(2 / n)
    assert stats.kstest(flat, "norm").pvalue > 1e-3
    assert abs(stats.skew(flat)) < 5 * np.sqrt(6 / n) and abs(stats.kurtosis(flat)) < 5 * np.sqrt(24 / n)
    assert abs((np.abs(flat) > 3).mean() - 2 * stats.norm.sf(3)) < 5 * np.sqrt(0.0027 / n)
    # the two Box-Muller outputs of a pair, neighbouring trajectories, and consecutive steps are uncorrelated
    limit = 5 / np.sqrt(z[:, 0::2].size)
    assert abs(np.corrcoef(z[:, 0::2].ravel(), z[:, 1::2].ravel())[0, 1]) < limit
    assert abs(np.corrcoef(z[:-1].ravel(), z[1:].ravel())[0, 1]) < 5 / np.sqrt(z[1:].size)
    later = normal(1, np.arange(400), 4, 500).numpy()
    assert abs(np.corrcoef(flat, later.ravel())[0, 1]) < 5 / np.sqrt(n)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_same_noise_on_a_gpu():
    cpu = normal(3, np.arange(64), 2, 33)
    gpu = normal(3, np.arange(64), 2, 33, device="cuda").cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-12, atol=1e-12)


def test_the_noise_is_computed_where_the_indices_live():
    """A GPU run keeps its indices on the GPU; the noise must be computed there, not on or through the host. The
    meta device stands in for a GPU: any step that reads a value back or mixes in a host tensor fails on it."""
    z = normal(3, torch.arange(4, device="meta"), 2, 5, device="meta")
    assert z.device.type == "meta" and z.shape == (4, 5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_noise_never_makes_the_host_wait():
    """Seed and step are Python ints: made into GPU tensors they would be copied from the host at every step."""
    index = check_indices(np.arange(64)).cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        normal(3, index, 2, 33, device="cuda")
    finally:
        torch.cuda.set_sync_debug_mode(0)
