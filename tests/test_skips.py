"""Gated and attention skips, and test-time knock-out of a trained model's skips."""

from __future__ import annotations

import pytest
import torch

from unetseg.models import SkipMerge, UNet
from unetseg.models.skips import GATE_SCALE, GATE_SLOPE


@pytest.mark.parametrize("mode", ["gated", "attention"])
def test_gated_and_attention_concatenate_a_weighted_skip(mode):
    merge = SkipMerge(mode, up_channels=6, skip_channels=4)
    assert merge.out_channels == 10
    up, skip = torch.randn(2, 6, 9, 7), torch.randn(2, 4, 9, 7)
    out = merge(up, skip)
    assert out.shape == (2, 10, 9, 7)
    assert torch.equal(out[:, :6], up)
    weighted = out[:, 6:]
    # Every weight is positive and bounded: the skip is scaled, never sign-flipped.
    ratio = weighted / skip
    limit = GATE_SCALE if mode == "gated" else 1.0
    assert ((ratio > 0) & (ratio < limit)).all()


def test_gate_starts_as_concat_at_the_steepest_point_and_closes_to_no_skip():
    merge = SkipMerge("gated", 3, 3)
    up, skip = torch.randn(1, 3, 5, 5), torch.randn(1, 3, 5, 5)
    assert torch.equal(merge.gate_values(), torch.ones(3))
    assert torch.equal(merge(up, skip), torch.cat([up, skip], 1))  # at init exactly a concat skip
    merge(up, skip)[:, 3:].sum().backward()
    # d gate / d g = GATE_SCALE * GATE_SLOPE * sigmoid'(0): the sigmoid at its steepest.
    assert torch.allclose(merge.gate_logit.grad, GATE_SCALE * GATE_SLOPE * 0.25 * skip.sum(dim=(0, 2, 3)))
    with torch.no_grad():
        merge.gate_logit.fill_(-100.0)
    assert torch.allclose(merge(up, skip), torch.cat([up, torch.zeros_like(skip)], 1), atol=1e-12)
    assert SkipMerge("concat", 3, 3).gate_values() is None


def test_checkpoint_with_the_old_gate_parameter_predicts_as_before():
    """Before the reparametrisation the multiplier was sigmoid(gate); such a state dict loads
    into the same function."""
    merge = SkipMerge("gated", 3, 3)
    old = torch.tensor([4.0, 0.0, -2.0])
    merge.load_state_dict({"gate": old})
    up, skip = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    expected = torch.cat([up, skip * torch.sigmoid(old).view(1, -1, 1, 1)], 1)
    assert torch.allclose(merge(up, skip), expected, atol=1e-6)


def _useless_skip_run(level: int, steps: int = 120) -> list[float]:
    """Train a gated U-Net whose skip at ``level`` carries only noise; the mean gate per level."""
    torch.manual_seed(0)
    net = UNet(1, 1, depth=3, base_width=8, skips="gated", norm="batch")
    noise = net.decoder.skips[level].register_forward_pre_hook(lambda m, args: (args[0], torch.randn_like(args[1]) * 3))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(steps):
        image = torch.nn.functional.avg_pool2d(torch.randn(8, 1, 36, 36), 5, 1)  # smooth blobs, 32 x 32
        target = (image > 0).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(image), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    noise.remove()
    return [float(m.gate_values().mean()) for m in net.decoder.skips]


def test_gate_closes_on_a_skip_that_carries_only_noise():
    """The gate on a noise-only full-resolution skip closes within 120 Adam steps while the
    useful skip stays open; with the noise one level deeper, that level's gate is the lower."""
    noisy, useful = _useless_skip_run(level=0)
    assert noisy < 0.5 and useful > 0.9, (noisy, useful)
    useful, noisy = _useless_skip_run(level=1)
    assert noisy < useful, (noisy, useful)


def test_attention_gate_is_trained_by_backprop():
    merge = SkipMerge("attention", 4, 4)
    merge(torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)).square().sum().backward()
    for name, p in merge.attention.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("mode", ["gated", "attention"])
@pytest.mark.parametrize("encoder", ["plain", "residual"])
def test_whole_model_with_new_modes_any_size(mode, encoder):
    net = UNet(1, 2, depth=4, base_width=4, encoder=encoder, skips=[mode, "concat", mode])
    out = net(torch.randn(1, 1, 37, 45))
    assert out.shape == (1, 2, 37, 45)
    # The decoder block widens exactly as for concat.
    concat = UNet(1, 2, depth=4, base_width=4, encoder=encoder, skips="concat")
    assert net.decoder.blocks[0][0].conv1[0].in_channels == concat.decoder.blocks[0][0].conv1[0].in_channels


def _eval_net(skips) -> UNet:
    torch.manual_seed(0)
    net = UNet(1, 1, depth=3, base_width=4, skips=skips).eval()
    return net


def test_knockout_of_unused_level_changes_nothing_and_of_used_level_does():
    net = _eval_net(["concat", "none"])
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        before = net(x)
        net.decoder.skips[1].knockout = "zero"  # level 1 has no skip: nothing to knock out
        assert torch.equal(net(x), before)
        net.decoder.skips[1].knockout = None
        net.decoder.skips[0].knockout = "zero"
        assert not torch.allclose(net(x), before)
        net.decoder.skips[0].knockout = None
        assert torch.equal(net(x), before)


def test_knockout_zero_and_mean_feed_what_they_say():
    merge = SkipMerge("concat", 2, 2)
    up, skip = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)
    merge.knockout = "zero"
    assert torch.equal(merge(up, skip)[:, 2:], torch.zeros_like(skip))
    merge.knockout = "mean"
    fed = merge(up, skip)[:, 2:]
    assert torch.allclose(fed, skip.mean(dim=(2, 3), keepdim=True).expand_as(skip))
    merge.knockout = "bogus"
    with pytest.raises(ValueError, match="knockout must be one of"):
        merge(up, skip)
