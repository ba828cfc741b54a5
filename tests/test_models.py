"""Networks: shapes over the whole option grid, any input size, gradients, skip wiring,
blocks, reference models and state-dict names."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from unetseg.config import MonaiBasicUNetConfig, MonaiUNetConfig, SmpUnetConfig, UNetConfig
from unetseg.models import SkipMerge, UNet, build_model, count_parameters
from unetseg.models.blocks import PreActBlock, ResidualBlock, make_act, make_norm
from unetseg.models.padding import SizeAgnostic, pad_to_multiple

ENCODERS = ["plain", "residual", "preact", "smp:resnet18"]
SKIPS = ["concat", "add", "none", ["concat", "none", "add"]]  # depth 4: three skip levels
NORMS = ["batch", "instance", "group", "none"]
ACTS = ["relu", "leaky_relu", "gelu", "silu", "elu", "prelu"]


def tiny_unet(**kwargs) -> UNet:
    torch.manual_seed(0)
    args = {"depth": 4, "base_width": 4}
    args.update(kwargs)
    return UNet(1, 2, **args)


def first_conv(net: nn.Module) -> nn.Conv2d:
    return next(m for m in net.modules() if isinstance(m, nn.Conv2d))


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    "skips, encoder, downsample, upsample",
    list(itertools.product(SKIPS, ENCODERS, ["maxpool", "conv"], ["transpose", "bilinear"])),
    ids=lambda v: "-".join(v) if isinstance(v, list) else str(v),
)
def test_shape_grid(skips, encoder, downsample, upsample):
    net = tiny_unet(encoder=encoder, skips=skips, downsample=downsample, upsample=upsample)
    expected_modes = skips if isinstance(skips, list) else [skips] * 3
    assert net.skip_modes == expected_modes
    x = torch.randn(2, 1, 37, 45)
    out = net(x)
    assert out.shape == (2, 2, 37, 45)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("size", [(333, 500), (37, 45), (16, 16), (9, 130)])
def test_any_input_size_keeps_height_and_width(encoder, size):
    net = tiny_unet(encoder=encoder, skips=["concat", "add", "none"]).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, *size))
    assert out.shape == (1, 2, *size)


def test_three_channel_input_and_multiclass_output():
    net = UNet(3, 5, depth=3, base_width=4)
    assert net(torch.randn(1, 3, 21, 19)).shape == (1, 5, 21, 19)


def test_output_is_aligned_with_input_top_left():
    """Padding goes bottom/right only, so cropping keeps pixel (0, 0) where it was: the
    first rows of a padded input's output equal those of the exact-multiple input."""
    net = tiny_unet(depth=3, norm="none").eval()
    x = torch.randn(1, 1, 40, 40)
    with torch.no_grad():
        full = net(x)
        cropped = net(x[..., :37, :37])
    # Far from the padded edge the receptive field sees the same pixels.
    assert torch.allclose(full[..., :20, :20], cropped[..., :20, :20], atol=1e-5)


def test_pad_to_multiple():
    x = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(1, 2, 5, 7)
    y = pad_to_multiple(x, 4)
    assert y.shape == (1, 2, 8, 8)
    assert torch.equal(y[..., :5, :7], x)
    assert pad_to_multiple(x[..., :4, :8], 4).shape == (1, 2, 4, 8)
    # At most one multiple each way would leave one pixel at the deepest level: two multiples
    # each way instead (issue #27: instance norm cannot normalise a single pixel).
    assert pad_to_multiple(x[..., :4, :4], 4).shape == (1, 2, 8, 8)
    tiny = torch.randn(1, 1, 2, 3)  # smaller than the pad: replicate instead of reflect
    assert pad_to_multiple(tiny, 8).shape == (1, 1, 16, 16)
    assert pad_to_multiple(tiny, 1) is tiny


@pytest.mark.parametrize("norm", ["instance", "batch"])
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (1, 7), (16, 16)])
def test_tiny_inputs_run_in_eval_and_training(norm, size):
    """A 1x1 or 2x2 image crashed predict ('Expected more than 1 spatial element'); a crop of
    exactly the network's multiple crashed training with instance norm."""
    net = UNet(1, 2, depth=3, base_width=4, norm=norm, stem_stride=4)  # multiple 16
    x = torch.rand(2, 1, *size)
    net.train()
    assert net(x).shape == (2, 2, *size)
    net.eval()
    with torch.no_grad():
        assert net(x[:1]).shape == (1, 2, *size)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("encoder", ENCODERS)
def test_gradient_reaches_first_conv(encoder):
    net = tiny_unet(encoder=encoder, skips=["concat", "add", "none"])
    conv = first_conv(net)
    assert conv.in_channels == 1, "the first conv must be the one that sees the image"
    x, target = torch.randn(2, 1, 32, 32), torch.randint(0, 2, (2, 32, 32))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    # One step first: a residual encoder zero-initialises its last norm (the block starts as
    # its shortcut), so at step 0 its inner convolutions get no gradient by design.
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), target).backward()
        opt.step()
    grad = conv.weight.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad.abs().sum() > 0
    unused = [n for n, p in net.named_parameters() if p.grad is None]
    if encoder.startswith("smp:"):
        # smp keeps the stages beyond the requested depth (for its pretrained weights); a
        # depth-4 U-Net uses resnet18 up to layer2 only.
        unused = [n for n in unused if not n.startswith(("encoder.body.layer3.", "encoder.body.layer4."))]
    assert not unused, f"parameters outside the graph: {unused}"


def test_zero_init_residual_gate_gets_gradient_at_init():
    net = tiny_unet(encoder="residual")
    block = net.encoder.stages[0].blocks[0]
    assert torch.all(block.norm2.weight == 0)
    nn.functional.cross_entropy(net(torch.randn(2, 1, 16, 16)), torch.randint(0, 2, (2, 16, 16))).backward()
    assert block.norm2.weight.grad.abs().sum() > 0
    assert block.shortcut[0].weight.grad.abs().sum() > 0  # the 1 -> 4 projection sees the image


# --------------------------------------------------------------------------- skip wiring


def _block_in(net: UNet, level: int) -> int:
    return net.decoder.blocks[level][0].conv1[0].in_channels


def test_skip_mode_sets_decoder_block_input_channels():
    # encoder widths 4, 8, 16, 32; decoder widths 4, 8, 16
    base = tiny_unet(skips="concat")
    assert [_block_in(base, lv) for lv in range(3)] == [4 + 4, 8 + 8, 16 + 16]

    for mode in ("none", "add"):
        net = tiny_unet(skips=["concat", mode, "concat"])
        assert net.decoder.skips[1].out_channels == 8
        assert _block_in(net, 1) == 8
        assert _block_in(net, 0) == 8 and _block_in(net, 2) == 32  # other levels untouched
        # the level-1 block's first conv (3x3, no bias under batch norm) lost 8 input channels
        assert count_parameters(base) - count_parameters(net) == 8 * 8 * 9
        assert net.decoder.skips[1].proj is None  # equal widths: plain sum, no projection


def test_none_skip_never_receives_the_encoder_feature():
    net = tiny_unet(skips=["none", "concat", "add"]).eval()
    seen = {}
    for level, merge in enumerate(net.decoder.skips):
        merge.register_forward_hook(lambda m, args, out, level=level: seen.__setitem__(level, args[1]))
    net(torch.randn(1, 1, 32, 32))
    assert seen[0] is None
    assert isinstance(seen[1], torch.Tensor) and isinstance(seen[2], torch.Tensor)


def test_all_none_skips_make_output_independent_of_shallow_features():
    """With no long skips, the output depends on the image only through the bottleneck:
    zeroing the level-0 encoder feature after the fact changes nothing."""
    net = tiny_unet(skips="none").eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        ref = net(x)
        feats = net.encoder(x)
        feats[0] = torch.zeros_like(feats[0])
        out = net.head(net.decoder(feats))
    assert torch.allclose(ref, out)
    concat = tiny_unet(skips="concat").eval()
    with torch.no_grad():
        feats = concat.encoder(x)
        ref = concat.head(concat.decoder(feats))
        feats[0] = torch.zeros_like(feats[0])
        assert not torch.allclose(ref, concat.head(concat.decoder(feats)))


def test_add_with_differing_widths_creates_projection():
    base = tiny_unet(skips="add", decoder_widths=[4, 8, 16])
    wide = tiny_unet(skips="add", decoder_widths=[4, 12, 16])
    proj = wide.decoder.skips[1].proj
    assert isinstance(proj, nn.Conv2d)
    assert proj.weight.shape == (12, 8, 1, 1)
    assert wide.decoder.skips[0].proj is None and wide.decoder.skips[2].proj is None
    assert all(m.proj is None for m in base.decoder.skips)
    assert _block_in(wide, 1) == 12
    assert wide(torch.randn(1, 1, 24, 24)).shape == (1, 2, 24, 24)


def test_skipmerge_modes():
    up, skip = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    assert torch.equal(SkipMerge("concat", 4, 4)(up, skip), torch.cat([up, skip], 1))
    assert SkipMerge("concat", 4, 6).out_channels == 10
    assert torch.equal(SkipMerge("add", 4, 4)(up, skip), up + skip)
    assert torch.equal(SkipMerge("none", 4, 4)(up, None), up)
    assert SkipMerge("none", 4, 6).out_channels == 4
    merge = SkipMerge("add", 4, 2)
    assert merge.out_channels == 4 and merge.proj.weight.shape == (4, 2, 1, 1)
    skip2 = torch.randn(1, 2, 5, 5)
    assert torch.allclose(merge(up, skip2), up + merge.proj(skip2))
    with pytest.raises(ValueError, match="needs the encoder feature"):
        SkipMerge("concat", 4, 4)(up, None)


@pytest.mark.parametrize("typo, right", [("concta", "concat"), ("ad", "add"), ("nnoe", "none")])
def test_skipmerge_rejects_typo_with_hint(typo, right):
    with pytest.raises(ValueError, match=f"did you mean '{right}'"):
        SkipMerge(typo, 4, 4)
    with pytest.raises(ValueError, match="unknown skip mode"):
        UNet(1, 1, depth=3, base_width=4, skips=["concat", typo])


# --------------------------------------------------------------------------- options


def test_invalid_norm_and_act_rejected():
    with pytest.raises(ValueError, match="unknown normalisation 'btach'"):
        UNet(1, 1, depth=3, base_width=4, norm="btach")
    with pytest.raises(ValueError, match="unknown activation 'rleu'"):
        UNet(1, 1, depth=3, base_width=4, act="rleu")
    with pytest.raises(ValueError):
        make_norm("layer", 4)
    with pytest.raises(ValueError, match="unknown block 'dnese'.*did you mean 'dense'"):
        UNet(1, 1, depth=3, base_width=4, decoder_block="dnese")


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("act", ACTS)
def test_every_norm_and_act_trains(norm, act):
    net = tiny_unet(depth=3, encoder="residual", decoder_block="preact", norm=norm, act=act, downsample="conv")
    kinds = {type(m) for m in net.modules()}
    expected_norm = {"batch": nn.BatchNorm2d, "instance": nn.InstanceNorm2d, "group": nn.GroupNorm}.get(norm)
    if expected_norm is not None:
        assert expected_norm in kinds
    else:
        assert not kinds & {nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm}
    assert type(make_act(act)) in kinds
    x = torch.randn(2, 1, 24, 20)
    out = net(x)
    assert out.shape == (2, 2, 24, 20)
    out.square().mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_group_norm_groups_divide_channels():
    assert make_norm("group", 48).num_groups == 16
    assert make_norm("group", 64).num_groups == 32
    assert make_norm("group", 6).num_groups == 2


# --------------------------------------------------------------------------- blocks


@pytest.mark.parametrize("norm", ["batch", "instance", "group"])
@pytest.mark.parametrize("in_ch, out_ch, stride", [(4, 4, 1), (4, 8, 2), (4, 8, 1)])
def test_residual_block_starts_as_its_shortcut(norm, in_ch, out_ch, stride):
    torch.manual_seed(0)
    block = ResidualBlock(in_ch, out_ch, norm, "relu", stride).eval()
    x = torch.randn(2, in_ch, 16, 16)
    with torch.no_grad():
        out = block(x)
        expected = torch.relu(block.shortcut(x))
    assert out.shape == (2, out_ch, 16 // stride, 16 // stride)
    assert torch.allclose(out, expected, atol=1e-6)
    if in_ch == out_ch and stride == 1:
        assert isinstance(block.shortcut, nn.Identity)
        assert torch.allclose(out, torch.relu(x), atol=1e-6)
    else:
        assert isinstance(block.shortcut[0], nn.Conv2d) and block.shortcut[0].stride == (stride, stride)


def test_residual_block_is_not_identity_after_training_the_gate():
    block = ResidualBlock(4, 4, "batch", "relu").eval()
    nn.init.ones_(block.norm2.weight)
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(block(x), torch.relu(x))


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("act", ["relu", "silu", "gelu"])
def test_preact_block_formula_and_input_untouched(norm, act):
    """x + conv2(act(norm2(conv1(act(norm1(x)))))), and the caller's tensor is not modified
    (the block's input is also a long-skip feature of the encoder)."""
    torch.manual_seed(0)
    block = PreActBlock(4, 4, norm, act).eval()
    x = torch.randn(2, 4, 8, 8)
    x_before = x.clone()
    with torch.no_grad():
        out = block(x)
    assert torch.equal(x, x_before), "PreActBlock modified its input in place"
    a = make_act(act)
    with torch.no_grad():
        pre = a(block.norm1(x_before.clone()))
        expected = x_before + block.conv2(a(block.norm2(block.conv1(pre))))
    assert torch.allclose(out, expected, atol=1e-6)


def test_encoder_skip_features_are_not_modified_by_the_next_level():
    """With strided down-sampling the next level's pre-activation block sees the previous
    level's feature directly; the feature handed to the decoder must stay as computed."""
    net = tiny_unet(depth=3, encoder="preact", norm="none", downsample="conv").eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        level0 = net.encoder.stages[0](x)
        feats = net.encoder(x)
    assert torch.equal(feats[0], level0)
    assert (feats[0] < 0).any()  # a pre-activation block's output is not rectified


def test_blocks_per_level_stacks_blocks():
    net = tiny_unet(depth=3, blocks_per_level=3, encoder="residual")
    assert all(len(stage.blocks) == 3 for stage in net.encoder.stages)
    assert net(torch.randn(1, 1, 16, 16)).shape == (1, 2, 16, 16)


def test_width_growth_and_cap():
    net = UNet(1, 1, depth=5, base_width=4, width_growth=2.0, max_width=16)
    assert net.encoder.out_channels == [4, 8, 16, 16, 16]


def test_dropout_only_at_bottleneck():
    net = tiny_unet(depth=3, dropout=0.5)
    assert isinstance(net.encoder.dropout, nn.Dropout2d)
    assert sum(isinstance(m, nn.Dropout2d) for m in net.modules()) == 1


# --------------------------------------------------------------------------- smp / reference models


def test_smp_encoder_levels_and_default_decoder():
    net = tiny_unet(encoder="smp:resnet18")
    assert net.encoder.out_channels == [1, 64, 64, 128]  # level 0 is the image itself
    assert [m.out_channels for m in net.decoder.skips] == [16 + 1, 32 + 64, 64 + 64]


def test_unknown_smp_encoder_is_clear_value_error():
    with pytest.raises(ValueError, match=r"unknown smp encoder 'resnet181'.*did you mean.*'resnet18'"):
        UNet(1, 1, depth=3, encoder="smp:resnet181")
    with pytest.raises(ValueError, match="unknown smp encoder 'resnt18'"):
        build_model(UNetConfig(depth=3, encoder="smp:resnt18"), 1, 1)


def test_unknown_smp_encoder_in_reference_model_is_value_error():
    with pytest.raises(ValueError, match=r"unknown smp encoder 'resnt18'.*'resnet18'"):
        build_model(SmpUnetConfig(arch="smp_unet", encoder="resnt18"), 1, 1)


def test_smp_encoder_too_deep():
    with pytest.raises(ValueError, match="at most 5"):
        UNet(1, 1, depth=7, encoder="smp:resnet18")


@pytest.mark.parametrize(
    "cfg",
    [
        SmpUnetConfig(arch="smp_unet", encoder="resnet18", encoder_depth=5, decoder_channels=[16, 16, 8, 8, 8]),
        SmpUnetConfig(arch="smp_unet", encoder="resnet18", encoder_depth=3, decoder_channels=[16, 8, 8]),
        MonaiBasicUNetConfig(arch="monai_basicunet", features=[4, 4, 8, 8, 16, 4]),
        MonaiUNetConfig(arch="monai_unet", channels=[4, 8, 16, 32], strides=[2, 2, 2], num_res_units=1),
        MonaiUNetConfig(arch="monai_unet", channels=[4, 8, 16], strides=[2, 2], norm="batch"),
    ],
    ids=["smp5", "smp3", "basicunet", "monai_unet", "monai_unet_batch"],
)
def test_reference_models_accept_odd_sizes(cfg):
    net = build_model(cfg, 1, 3).eval()
    assert isinstance(net, SizeAgnostic)
    with torch.no_grad():
        assert net(torch.randn(1, 1, 333, 500)).shape == (1, 3, 333, 500)
        assert net(torch.randn(2, 1, 37, 45)).shape == (2, 3, 37, 45)


def test_build_model_unet_matches_config():
    cfg = UNetConfig(depth=3, base_width=4, skips=["add", "none"], encoder="preact", upsample="bilinear")
    net = build_model(cfg, 3, 4)
    assert isinstance(net, UNet)
    assert net.skip_modes == ["add", "none"]
    assert first_conv(net).in_channels == 3 and net.head.out_channels == 4


# --------------------------------------------------------------------------- naming


def test_state_dict_names_are_per_level():
    net = tiny_unet(skips="add", decoder_widths=[4, 12, 16])
    keys = list(net.state_dict())
    for prefix in (
        "encoder.stages.0.",
        "encoder.stages.2.",
        "encoder.stages.3.",
        "decoder.ups.2.",
        "decoder.blocks.0.",
        "decoder.blocks.2.",
        "decoder.skips.1.proj.",
        "head.",
    ):
        assert any(k.startswith(prefix) for k in keys), prefix
    assert not any(k.startswith("encoder.stages.4.") or k.startswith("decoder.blocks.3.") for k in keys)
    modules = dict(net.named_modules())
    assert isinstance(modules["decoder.skips.0"], SkipMerge)
    assert isinstance(modules["decoder.skips.2"], SkipMerge)


def test_state_dict_loads_across_instances_only_for_same_layout():
    a, b = tiny_unet(skips="concat"), tiny_unet(skips="concat")
    b.load_state_dict(a.state_dict())
    with pytest.raises(RuntimeError):
        tiny_unet(skips=["concat", "none", "concat"]).load_state_dict(a.state_dict())


# --------------------------------------------------------------------------- space-to-depth stem


@pytest.mark.parametrize("stride", [2, 4])
@pytest.mark.parametrize("size", [(64, 64), (37, 51), (7, 9)])
def test_stem_keeps_any_input_size(stride, size):
    net = UNet(
        3, 2, depth=3, base_width=4, encoder="residual", stem_stride=stride
    ).eval()  # 1x1 bottlenecks: no batch stats
    assert net(torch.randn(1, 3, *size)).shape == (1, 2, *size)
    assert net.multiple == 4 * stride  # two down-samplings below the stem


def test_stem_puts_level_zero_at_reduced_resolution():
    net = UNet(1, 1, depth=3, base_width=4, stem_stride=2)
    features = net.encoder(net.stem(torch.randn(1, 1, 32, 32)))
    assert [f.shape[-1] for f in features] == [16, 8, 4]
    assert net.encoder.stages[0].blocks[0].conv1[0].in_channels == 4  # 1 channel x 2 x 2 sub-pixels


def test_stem_head_overlaps_neighbouring_cells():
    """The transposed-conv head (kernel 2s, stride s) lets every output pixel depend on two
    neighbouring low-resolution locations per axis, and pixels of one s x s cell still differ."""
    net = UNet(1, 1, depth=2, base_width=4, stem_stride=2).eval()
    head = net.head
    assert isinstance(head, nn.ConvTranspose2d) and head.kernel_size == (4, 4) and head.stride == (2, 2)
    features = torch.zeros(1, head.in_channels, 4, 4)
    features[..., 1, 1] = 1.0  # one low-resolution location
    with torch.no_grad():
        reach = (head(features) - head(torch.zeros_like(features)))[0, 0].abs() > 0
    assert reach.shape == (8, 8) and reach.sum() == 16  # a 4x4 footprint: overlaps both neighbours
    out = net(torch.randn(1, 1, 16, 16))
    assert out[..., 0::2, 0::2].sub(out[..., 1::2, 1::2]).abs().max() > 0


def test_shuffle_head_sees_three_by_three_cells():
    """The sub-pixel head (3x3 conv to s*s values per class, then pixel shuffle): one
    low-resolution location reaches the 3x3 cells around it, every pixel of each cell."""
    net = UNet(1, 2, depth=2, base_width=4, stem_stride=4, head="shuffle").eval()
    conv, shuffle = net.head
    assert conv.out_channels == 2 * 16 and shuffle.upscale_factor == 4
    features = torch.zeros(1, conv.in_channels, 5, 5)
    features[..., 2, 2] = 1.0
    with torch.no_grad():
        reach = (net.head(features) - net.head(torch.zeros_like(features))).abs() > 0
    assert reach.shape == (1, 2, 20, 20)
    assert reach[0, 0].nonzero().amin(0).tolist() == [4, 4] and reach[0, 0].nonzero().amax(0).tolist() == [15, 15]
    assert reach[:, :, 4:16, 4:16].all()
    assert net(torch.randn(1, 1, 37, 51)).shape == (1, 2, 37, 51)


def test_head_rules():
    assert UNetConfig(stem_stride=4, head="shuffle").head == "shuffle"
    with pytest.raises(ValueError, match="head"):
        UNetConfig(head="bilinear")
    with pytest.raises(ValueError, match="head must be"):
        UNet(1, 1, stem_stride=2, head="bilinear")
    assert isinstance(UNet(1, 1, depth=2, base_width=4, head="shuffle").head, nn.Conv2d)  # full resolution: 1x1 as ever


def test_stem_gradient_reaches_every_input_pixel():
    net = UNet(1, 1, depth=3, base_width=4, encoder="residual", stem_stride=4)
    x = torch.randn(1, 1, 32, 32, requires_grad=True)
    net(x).sum().backward()
    assert (x.grad.abs() > 0).all()


@pytest.mark.parametrize("stride", [2, 4])
def test_refinement_keeps_any_input_size(stride):
    net = UNet(
        3, 2, depth=3, base_width=4, encoder="residual", stem_stride=stride, head="shuffle", refine_width=6
    ).eval()
    assert net.head[0].out_channels == 6 * stride**2  # features per pixel now, not logits
    assert net.refine.conv.in_channels == 6 + 3  # the head's channels and the image's
    for size in [(64, 64), (37, 51), (7, 9)]:
        assert net(torch.randn(1, 3, *size)).shape == (1, 2, *size)


def test_refinement_reads_the_image_at_full_resolution():
    """The skip from the input reaches the logits pixel for pixel: with the head silenced, one
    changed image pixel changes the 3x3 logits around it and nothing else (the encoder path,
    which sees the image only in stride x stride cells, carries nothing)."""
    torch.manual_seed(0)
    net = UNet(1, 1, depth=3, base_width=4, encoder="residual", stem_stride=4, head="shuffle", refine_width=4).eval()
    with torch.no_grad():
        for p in net.head.parameters():
            p.zero_()
        x = torch.rand(1, 1, 32, 32)
        y = x.clone()
        y[0, 0, 13, 18] += 1.0
        changed = (net(y) - net(x))[0, 0].abs() > 1e-7
    assert changed.nonzero().amin(0).tolist() == [12, 17] and changed.nonzero().amax(0).tolist() == [14, 19]


def test_refinement_trains_the_whole_path():
    net = UNet(1, 1, depth=3, base_width=4, encoder="residual", stem_stride=2, head="shuffle", refine_width=4)
    net(torch.randn(2, 1, 32, 32)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.refine.parameters())
    assert net.head[0].weight.grad.abs().sum() > 0


def test_refinement_rules():
    assert UNetConfig(stem_stride=4, head="shuffle", refine_width=8).refine_width == 8
    with pytest.raises(ValueError, match="refine_width needs stem_stride"):
        UNetConfig(refine_width=8)
    with pytest.raises(ValueError, match="refine_width needs stem_stride"):
        UNet(1, 1, refine_width=8)
    with pytest.raises(ValueError, match="refine_width"):
        UNetConfig(stem_stride=2, refine_width=-1)
    assert UNet(1, 1, depth=2, base_width=4, stem_stride=2).refine is None


def test_stem_config_rules():
    assert UNetConfig(stem_stride=2).stem_stride == 2
    with pytest.raises(ValueError, match="stem_stride"):
        UNetConfig(stem_stride=3)
    with pytest.raises(ValueError, match="stem_stride applies"):
        UNetConfig(encoder="smp:resnet18", stem_stride=2)
    with pytest.raises(ValueError, match="stem_stride must be"):
        UNet(1, 1, stem_stride=8)


# --------------------------------------------------------------------------- deep supervision


@pytest.mark.parametrize(
    "kwargs", [{}, {"encoder": "residual", "stem_stride": 4, "head": "shuffle", "refine_width": 4}]
)
def test_deep_supervision_outputs_full_size_logits_and_a_plain_call_only_the_main_ones(kwargs):
    net = tiny_unet(deep_supervision=2, **kwargs).eval()
    x = torch.randn(2, 1, 37, 51)
    outs = net(x, deep_supervision=True)
    assert len(outs) == 3 and all(o.shape == (2, 2, 37, 51) for o in outs)
    assert torch.equal(net(x), outs[0])
    assert not torch.allclose(outs[1], outs[2])  # two different levels, two different heads
    assert [h.in_channels for h in net.aux_heads] == net.decoder.widths[1:3]


def test_deep_supervision_heads_train_only_the_levels_they_read():
    """An auxiliary head's loss reaches its own decoder level and everything below it, but not
    the finer levels above (whose outputs it never sees)."""
    net = tiny_unet(deep_supervision=2)
    _, _, aux2 = net(torch.randn(2, 1, 32, 32), deep_supervision=True)
    aux2.square().mean().backward()
    grads = {name: p.grad for name, p in net.named_parameters()}
    assert grads["aux_heads.1.weight"].abs().sum() > 0 and grads["aux_heads.0.weight"] is None
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("decoder.blocks.2."))
    assert all(g is None for n, g in grads.items() if n.startswith(("decoder.blocks.1.", "decoder.blocks.0.", "head")))


def test_deep_supervision_rules():
    assert UNetConfig(depth=5, deep_supervision=3).deep_supervision == 3
    with pytest.raises(ValueError, match="at most 3, got 4"):
        UNetConfig(depth=5, deep_supervision=4)
    with pytest.raises(ValueError, match="at most 2, got 3"):  # the config's rule and message
        UNet(1, 1, depth=4, deep_supervision=3)
    with pytest.raises(ValueError, match="no deep-supervision heads"):
        tiny_unet()(torch.randn(1, 1, 16, 16), deep_supervision=True)
    assert len(tiny_unet().aux_heads) == 0 and not any("aux" in k for k in tiny_unet().state_dict())
