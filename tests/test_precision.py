"""Reduced precision: the network precisions, the bias that rounding noise adds to the Bayes increments (against an
exact mixture with noise of known power injected), and its measurement on a network."""

import math

import numpy as np
import pytest
import torch
from test_ddpm_sample import MIX, ExactMixtureNet

from seminfo.chain.diffusion import reverse_chain
from seminfo.chain.evaluator import network_precision
from seminfo.chain.posterior import entropy_bits, online_log_posterior
from seminfo.chain.precision import bias_factors, entropy_bias_bound_bits, log_odds_budget, noise_table, rounding_noise
from seminfo.chain.sampler import sample_trajectories
from seminfo.chain.schedules import make_schedule
from seminfo.models import NetworkAdapter


def test_fp32_switches_tf32_off_and_restores_the_flags():
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    try:
        matmul.allow_tf32 = cudnn.allow_tf32 = True  # cuDNN's default in PyTorch
        with network_precision("fp32", torch.device("cpu")):
            assert not matmul.allow_tf32 and not cudnn.allow_tf32
        assert matmul.allow_tf32 and cudnn.allow_tf32
        with network_precision("bf16", torch.device("cpu")):
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
        assert not torch.is_autocast_enabled("cpu")
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved
    with pytest.raises(ValueError, match="tf32 needs a CUDA device"):
        with network_precision("tf32", torch.device("cpu")):
            pass
    with pytest.raises(ValueError, match="precision must be one of"):
        with network_precision("fp16", torch.device("cpu")):
            pass


def test_bias_factors_are_beta_over_two_alpha_one_minus_alpha_bar():
    """B^2 / (2 sigma^2) of the epsilon DDPM step with the small variance is beta / (2 alpha (1 - alpha_bar_s)),
    with beta = 1 - alpha_bar_t / alpha_bar_s of the respaced step: the closed form, from the chain's alpha_bar."""
    chain = reverse_chain(make_schedule("linear", 1000), 40, "small")
    ab = chain.alpha_bar
    beta = 1.0 - ab[2:] / ab[1:-1]  # steps i = 2 … S (the last step, i = 1, adds no noise: no Bayes step)
    expected = beta / (2.0 * (1.0 - beta) * (1.0 - ab[1:-1]))
    f = bias_factors(chain)
    assert f[0] == 0.0
    np.testing.assert_allclose(f[1:], expected, rtol=1e-10)


def test_log_odds_budget_sums_the_steps_taken_before_each_grid_point():
    chain = reverse_chain(make_schedule("linear", 1000), 10, "small")
    power = np.linspace(1.0, 2.0, chain.steps)
    L = log_odds_budget(chain, power)
    b = bias_factors(chain) * power
    start = chain.posterior_start
    assert L.shape == (chain.steps - start + 1,) and L[-1] == 0.0
    for g in range(L.size):
        assert L[g] == pytest.approx(b[start + g:].sum(), rel=1e-12)


class NoisyOutputs(torch.nn.Module):
    """The exact mixture network with independent Gaussian noise of standard deviation ``std`` on every output: a
    rounding error of known power, E||e_c||^2 = 2 std^2 per element."""

    def __init__(self, net, std):
        super().__init__()
        self.net, self.std, self.g = net, std, torch.Generator().manual_seed(1)

    def forward(self, x, t, y):
        out = self.net(x, t, y)
        return out + self.std * torch.randn(out.shape, generator=self.g)


def test_injected_noise_lowers_the_entropy_within_the_derived_bound():
    """Noise on the outputs makes the posterior too sharp: the mean entropy drops, by at most the bound of
    ``seminfo.chain.precision`` (and by a sizeable part of it, so the bound is the right scale)."""
    sched, std, per_class = make_schedule("linear", 1000), 0.1, 1000
    chain = reverse_chain(sched, 50, "small")
    labels = np.repeat(np.arange(MIX.K), per_class)

    def entropy(net):
        model = NetworkAdapter(net, sched, [str(k) for k in range(MIX.K)], (1, 1, 1), has_null=True)
        out = sample_trajectories(model, chain, labels, np.arange(labels.size), 0, eval_batch=10**5, progress=False)
        return entropy_bits(online_log_posterior(np.broadcast_to(MIX.log_prior, (labels.size, MIX.K)),
                                                 out.increments))

    exact = ExactMixtureNet(MIX, sched)
    drop = entropy(exact) - entropy(NoisyOutputs(exact, std))  # paired: the same seeds
    mean, se = drop.mean(0), drop.std(0, ddof=1) / math.sqrt(drop.shape[0])
    bound = entropy_bias_bound_bits(log_odds_budget(chain, 2 * std**2), MIX.K)
    assert np.all(mean >= -3 * se - 1e-12)
    assert np.all(mean <= bound + 3 * se + 1e-12)
    assert (mean / np.maximum(bound, 1e-12)).max() > 0.3


def test_rounding_noise_is_zero_in_fp32_and_positive_in_bf16(tiny_unet):
    x = torch.randn(3, 1, 8, 8)
    same = rounding_noise(tiny_unet, x, 500, (0, 1, 4), ["fp32", "bf16"], "cpu")
    assert same["fp32"]["noise"] == 0.0
    assert 0 < same["bf16"]["noise"] < 1e-2 * same["bf16"]["output"]
    assert same["bf16"]["signal"] > 0
    table = noise_table(tiny_unet, (1, 8, 8), make_schedule("linear", 1000), (1, 999), ["bf16"], "cpu", samples=2)
    assert table["times"] == [1, 999] and len(table["bf16"]["noise"]) == 2


def _with_precision(path, experiment, **sampling):
    import copy

    from conftest import REPO, SCHEMA

    from seminfo.config import load_config

    config = copy.deepcopy(load_config(REPO / path, SCHEMA))
    config["experiments"][experiment]["sampling"].update(sampling)
    return config


def test_a_reduced_precision_is_refused_where_its_predicted_bias_exceeds_the_gate():
    from seminfo.config import ConfigError
    from seminfo.stages.precision import check_own_precision

    check_own_precision(_with_precision("config.yaml", "digits", precision="fp32"))
    # digits (D = 64, 100 steps): TF32's noise predicts under 0.001 bit; bf16's 0.2 bit is refused, unless overridden
    check_own_precision(_with_precision("config.yaml", "digits", precision="tf32"))
    with pytest.raises(ConfigError, match=r"experiments\.digits\.sampling\.precision: bf16 may bias .* bit"):
        check_own_precision(_with_precision("config.yaml", "digits", precision="bf16"))
    check_own_precision(_with_precision("config.yaml", "digits", precision="bf16", precision_override=True))
    # the paper's CIFAR10 run (D = 3072, 1000 steps): even TF32 is refused
    with pytest.raises(ConfigError, match="tf32 may bias the entropy by up to 0.0"):
        check_own_precision(_with_precision("workflow/configs/cifar10.yaml", "cifar10", precision="tf32"))
