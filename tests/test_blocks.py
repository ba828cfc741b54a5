"""The short-skip family: every block type x shortcut x downsample option (shapes, gradients),
exact identities (closed highway gate, zeroed residual branch, option-A padding), stochastic
depth, CReLU widths, looks-linear init, deep encoders and the whole model at several depths."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unetseg.config import BLOCK_TYPES, RESIDUAL_BLOCKS, ConfigError, UNetConfig, config_from_dict
from unetseg.models import UNet, build_model
from unetseg.models.blocks import (
    BLOCKS,
    HIGHWAY_GATE_BIAS,
    RESIDUAL_TYPE,
    BlockOptions,
    PreActBlock,
    ResidualBlock,
    make_stage,
)
from unetseg.models.encoder import UNetEncoder
from unetseg.models.layers import CReLU
from unetseg.models.shortcuts import Demirror, DropPath, Subsample, ZeroPad, make_shortcut

BLOCK_NAMES = list(BLOCKS)
SHORTCUTS = ["projection", "zero_pad"]
DOWNSAMPLES = ["stride", "avgpool"]
# (in, out, stride): keep both, widen, widen and halve, halve only
SHAPE_CASES = [(4, 4, 1), (4, 8, 1), (4, 8, 2), (8, 8, 2)]


def make_block(name, in_ch, out_ch, stride=1, norm="batch", act="relu", **options):
    """A block as a network builds it: under CReLU its input is the previous block's CReLU output."""
    torch.manual_seed(0)
    crelu_in = (0, in_ch) if act == "crelu" else None
    return BLOCKS[name](in_ch, out_ch, norm, act, stride, options=BlockOptions(**options), crelu_in=crelu_in)


def combos(*lists):
    """Parameter tuples with readable ids."""
    return [pytest.param(*c, id="-".join(map(str, c))) for c in itertools.product(*lists)]


def crelu(h: torch.Tensor) -> torch.Tensor:
    return torch.cat([h.relu(), (-h).relu()], dim=1)


def assert_linear(f, x, y, a=0.7, b=-1.3, rtol=1e-4):
    """f(a x + b y) == a f(x) + b f(y), relative to the size of the output."""
    with torch.no_grad():
        lhs, fx, fy = f(a * x + b * y), f(x), f(y)
    rhs = a * fx + b * fy
    assert fx.abs().max() > 1e-3, "the signal vanished, linearity would hold trivially"
    assert (lhs - rhs).abs().max() <= rtol * rhs.abs().max()


# --------------------------------------------------------------------------- every block, every option


@pytest.mark.parametrize("act", ["relu", "crelu"])
@pytest.mark.parametrize("in_ch, out_ch, stride", [pytest.param(*c, id="{}-{}-s{}".format(*c)) for c in SHAPE_CASES])
@pytest.mark.parametrize("name, shortcut, downsample", combos(BLOCK_NAMES, SHORTCUTS, DOWNSAMPLES))
def test_block_shape_and_gradient(name, shortcut, downsample, in_ch, out_ch, stride, act):
    """Odd input size: the output is ceil(n / stride), every parameter and the input get a
    gradient (zero_init_residual off, so no branch starts silent)."""
    block = make_block(
        name,
        in_ch,
        out_ch,
        stride,
        act=act,
        shortcut=shortcut,
        shortcut_downsample=downsample,
        zero_init_residual=False,
    )
    x = torch.randn(2, in_ch, 9, 11, requires_grad=True)
    out = block(x)
    assert out.shape == (2, out_ch, math.ceil(9 / stride), math.ceil(11 / stride))
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} gets no gradient"


@pytest.mark.parametrize("downsample", DOWNSAMPLES)
@pytest.mark.parametrize("shortcut", SHORTCUTS)
@pytest.mark.parametrize("name", ["residual", "highway", "preact"])
def test_shortcut_modules_match_the_options(name, shortcut, downsample):
    same = make_block(name, 4, 4, 1, shortcut=shortcut, shortcut_downsample=downsample)
    assert isinstance(same.shortcut, nn.Identity)
    block = make_block(name, 4, 8, 2, shortcut=shortcut, shortcut_downsample=downsample)
    kinds = [type(m) for m in block.shortcut.modules()]
    if shortcut == "zero_pad":
        assert isinstance(block.shortcut, ZeroPad) and not list(block.shortcut.parameters())
        assert type(block.shortcut.resample) is (Subsample if downsample == "stride" else nn.AvgPool2d)
    else:
        conv = next(m for m in block.shortcut.modules() if isinstance(m, nn.Conv2d))
        assert conv.kernel_size == (1, 1) and conv.out_channels == 8
        assert conv.stride == ((2, 2) if downsample == "stride" else (1, 1))
        assert (nn.AvgPool2d in kinds) == (downsample == "avgpool")


def test_default_shortcuts_keep_their_weight_names():
    """Checkpoints from before the shortcut options still load: same keys for the defaults."""
    res = ResidualBlock(4, 8, "batch", "relu", 2)
    assert {"shortcut.0.weight", "shortcut.1.weight"} <= set(res.state_dict())
    pre = PreActBlock(4, 8, "batch", "relu", 2)
    assert "shortcut.weight" in pre.state_dict()
    keys = set(UNet(1, 1, depth=3, base_width=4, encoder="residual", norm="none").state_dict())
    assert "encoder.stages.1.blocks.0.shortcut.0.bias" in keys


def test_zero_pad_shortcut_exact_values():
    x = torch.randn(2, 3, 5, 7)
    strided = ZeroPad(3, 5, 2, "stride")(x)
    assert strided.shape == (2, 5, 3, 4)
    assert torch.equal(strided[:, :3], x[..., ::2, ::2])
    assert torch.equal(strided[:, 3:], torch.zeros(2, 2, 3, 4))
    pooled = ZeroPad(3, 5, 2, "avgpool")(x)
    assert pooled.shape == (2, 5, 3, 4)
    assert torch.allclose(pooled[:, :3, 0, 0], x[..., :2, :2].mean(dim=(-2, -1)))
    assert torch.allclose(pooled[:, :3, 2, 3], x[..., 4, 6])  # the partial corner window is one pixel
    assert torch.allclose(pooled[:, :3, 1, 3], x[..., 2:4, 6].mean(dim=-1))
    assert torch.equal(pooled[:, 3:], torch.zeros(2, 2, 3, 4))
    assert torch.equal(ZeroPad(3, 3)(x), x)
    with pytest.raises(ValueError, match="cannot narrow 8 channels to 4"):
        ZeroPad(8, 4)


@pytest.mark.parametrize("downsample", DOWNSAMPLES)
def test_residual_block_with_option_a_starts_as_padded_identity(downsample):
    """Zero-initialised branch + zero-padding shortcut: the block is relu(pad(subsample(x)))."""
    block = make_block("residual", 4, 8, 2, shortcut="zero_pad", shortcut_downsample=downsample).eval()
    x = torch.randn(1, 4, 10, 10)
    down = x[..., ::2, ::2] if downsample == "stride" else F.avg_pool2d(x, 2)
    with torch.no_grad():
        assert torch.equal(block(x), F.pad(down, (0, 0, 0, 0, 0, 4)).relu())


# --------------------------------------------------------------------------- exact identities


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("norm", ["batch", "group", "instance"])
def test_residual_block_with_zeroed_branch_is_exactly_identity(norm, mode):
    """zero_init_residual: the branch is exactly 0, so a block reading a rectified input
    (what the previous block hands on) returns it bit for bit."""
    block = make_block("residual", 8, 8, norm=norm)
    block.train(mode == "train")
    assert torch.all(block.norm2.weight == 0)
    x = torch.randn(3, 8, 7, 9).relu()
    with torch.no_grad():
        assert torch.equal(block(x), x)
    assert torch.all(make_block("residual", 8, 8, norm=norm, zero_init_residual=False).norm2.weight == 1)


def test_residual_stack_with_zeroed_branches_is_exactly_identity():
    stage = make_stage("residual", 8, 8, 6, "batch", "relu")
    x = torch.randn(2, 8, 6, 6).relu()
    with torch.no_grad():
        assert torch.equal(stage(x), x)


def test_preact_block_with_zeroed_branch_is_exactly_identity():
    block = make_block("preact", 8, 8)
    nn.init.zeros_(block.conv2.weight)
    x = torch.randn(2, 8, 5, 5)  # any sign: the pre-activation identity path is clean
    with torch.no_grad():
        assert torch.equal(block(x), x)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_highway_block_with_closed_gate_is_exactly_identity(mode):
    block = make_block("highway", 8, 8)
    block.train(mode == "train")
    with torch.no_grad():
        block.gate.weight.zero_()
        block.gate_bias.fill_(-1e4)  # sigmoid underflows to exactly 0
    x = torch.randn(3, 8, 7, 9)
    with torch.no_grad():
        assert torch.equal(block.transform_gate(x), torch.zeros(3, 8, 7, 9))
        assert torch.equal(block(x), x)
    wide = make_block("highway", 4, 8, 2, shortcut="zero_pad")
    with torch.no_grad():
        wide.gate_bias.fill_(-1e4)
        assert torch.equal(wide(x[:, :4]), F.pad(x[:, :4, ::2, ::2], (0, 0, 0, 0, 0, 4)))


def test_highway_gate_starts_mostly_closed_and_opens_to_the_transform():
    block = make_block("highway", 8, 8).eval()
    assert torch.all(block.gate_bias == HIGHWAY_GATE_BIAS) and HIGHWAY_GATE_BIAS < 0
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        assert block.transform_gate(x).mean() < 0.2
        block.gate_bias.fill_(1e4)  # open: y = H(x)
        assert torch.allclose(block(x), block.conv2(block.conv1(x)), atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_dense_block_concatenates_input_and_earlier_layers(stride):
    block = make_block("dense", 4, 8, stride).eval()
    growth = 4
    assert [layer[-1].in_channels for layer in block.layers] == [4, 4 + growth]
    assert block.transition[-1].in_channels == 4 + 2 * growth and block.transition[-1].out_channels == 8
    x = torch.randn(1, 4, 9, 9)
    with torch.no_grad():
        for layer in block.layers:
            layer[-1].weight.zero_()  # silent layers: the transition still sees the block input
        down = x[..., ::stride, ::stride]
        zeros = torch.zeros(1, 2 * growth, *down.shape[-2:])
        assert torch.equal(block(x), block.transition(torch.cat([down, zeros], dim=1)))


# --------------------------------------------------------------------------- stochastic depth


def test_drop_path_probability_grows_linearly_over_the_encoder():
    enc = UNetEncoder(1, [4, 4, 4], "residual", 3, stochastic_depth=0.3)
    probs = [block.drop_path.p for stage in enc.stages for block in stage.blocks]
    assert probs == pytest.approx([0.3 * k / 9 for k in range(1, 10)])
    assert probs[-1] == pytest.approx(0.3)


@pytest.mark.parametrize("name", RESIDUAL_TYPE)
def test_stochastic_depth_is_off_in_eval_mode(name):
    kwargs = {"depth": 3, "base_width": 4, "encoder": name, "blocks_per_level": 2, "zero_init_residual": False}
    torch.manual_seed(0)
    dropping = UNet(1, 2, stochastic_depth=0.5, **kwargs).eval()
    keep_all = UNet(1, 2, **kwargs).eval()
    keep_all.load_state_dict(dropping.state_dict())
    x = torch.randn(2, 1, 20, 20)
    with torch.no_grad():
        out = dropping(x)
        assert torch.equal(out, dropping(x))
        assert torch.equal(out, keep_all(x))
        dropping.train()
        torch.manual_seed(1)
        first = dropping(x)
        assert not torch.equal(first, dropping(x)), "training passes should draw different depths"


def test_drop_path_drops_with_the_expected_frequency():
    torch.manual_seed(0)
    p, n = 0.3, 4000
    block = PreActBlock(2, 2, "none", "relu", drop_path=p)
    x = torch.randn(n, 2, 2, 2)
    with torch.no_grad():
        branch = block.eval()(x) - x
        out = block.train()(x)
    dropped = (out == x).flatten(1).all(dim=1)
    assert abs(dropped.float().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / n)
    kept = ~dropped
    assert torch.allclose(out[kept], x[kept] + branch[kept] / (1 - p), atol=1e-5)  # inverted scaling


def test_drop_path_module():
    assert DropPath(0.0)(t := torch.randn(3, 2)) is t
    drop = DropPath(0.5).eval()
    assert drop(t) is t
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        DropPath(1.0)


def test_stochastic_depth_needs_a_residual_type_encoder():
    assert set(RESIDUAL_TYPE) == set(RESIDUAL_BLOCKS) == {"residual", "preact", "highway"}
    for name in ("plain", "dense"):
        with pytest.raises(ValueError, match="residual-type encoder"):
            UNet(1, 1, depth=3, base_width=4, encoder=name, stochastic_depth=0.1)
        with pytest.raises(ValueError, match="residual-type encoder"):
            UNetConfig(encoder=name, stochastic_depth=0.1)
    with pytest.raises(ValueError, match="not to smp"):
        UNet(1, 1, depth=3, encoder="smp:resnet18", stochastic_depth=0.1)


# --------------------------------------------------------------------------- CReLU and looks-linear


def test_crelu_doubles_channels_and_blocks_keep_their_width():
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(CReLU()(x), crelu(x))
    assert torch.equal(Demirror()(CReLU()(x)), x)
    for name in BLOCK_NAMES:
        assert make_block(name, 4, 6, 2, act="crelu")(torch.randn(1, 4, 8, 8)).shape == (1, 6, 4, 4)
        image_reader = BLOCKS[name](3, 6, "batch", "crelu", 2)  # input not a CReLU output
        assert image_reader(torch.randn(1, 3, 8, 8)).shape == (1, 6, 4, 4)
    with pytest.raises(ValueError, match="width 5 must be even"):
        make_block("plain", 4, 5, act="crelu")


def test_crelu_residual_identity_reads_the_stream_back_exactly():
    """Under CReLU a residual block hands on crelu(s); the next one's identity shortcut is
    relu(s) - relu(-s) = s, so a zero-initialised block returns its input bit for bit."""
    block = ResidualBlock(8, 8, "batch", "crelu", crelu_in=(0, 8))
    assert isinstance(block.shortcut, Demirror)
    x = crelu(torch.randn(2, 4, 5, 5))
    with torch.no_grad():
        assert torch.equal(block(x), x)


def test_looks_linear_mirrors_weights_and_zeroes_biases():
    net = UNet(1, 1, depth=3, base_width=4, norm="none", act="crelu", init="looks_linear")
    conv2 = net.encoder.stages[0].blocks[0].conv2[0]
    assert conv2.crelu_in == ((0, 4),)
    assert torch.equal(conv2.weight[:, 2:], -conv2.weight[:, :2])
    assert all(m.bias is None or not m.bias.any() for m in net.modules() if isinstance(m, nn.Conv2d))
    head = net.head
    assert torch.equal(head.weight[:, 2:], -head.weight[:, :2])
    dec = net.decoder.blocks[0][0].conv1[0]  # reads cat([up (4), skip (crelu, 4)])
    assert dec.crelu_in == ((4, 4),) and torch.equal(dec.weight[:, 6:], -dec.weight[:, 4:6])


@pytest.mark.parametrize("name", ["plain", "residual", "preact", "dense"])
def test_looks_linear_deep_encoder_is_linear_at_init(name):
    """A 70+-conv encoder with CReLU and looks-linear init computes a linear map of the image
    (read through the CReLU pairs of its last feature); the default init does not."""
    widths, per_level = [4, 8, 8], 12
    enc = UNetEncoder(1, widths, name, per_level, "none", "crelu", "conv", init="looks_linear").eval()
    assert sum(m.kernel_size == (3, 3) for m in enc.modules() if isinstance(m, nn.Conv2d)) >= 70

    def features(x):
        last = enc(x)[-1]
        return Demirror()(last) if enc.crelu_features[-1] else last

    x, y = torch.randn(2, 1, 24, 24), torch.randn(2, 1, 24, 24)
    assert_linear(features, x, y)
    torch.manual_seed(0)
    default = UNetEncoder(1, widths, name, 2, "none", "crelu", "conv").eval()
    with pytest.raises(AssertionError):
        assert_linear(lambda t: default(t)[-1], x, y)


@pytest.mark.parametrize(
    "encoder, decoder_block, skips, norm, upsample",
    [
        ("plain", "plain", "concat", "none", "transpose"),
        ("residual", "preact", ["concat", "gated", "none"], "batch", "bilinear"),
        ("preact", "residual", "concat", "batch", "transpose"),
        ("dense", "dense", "none", "none", "nearest"),
        ("plain", "dense", "concat", "batch", "transpose"),
    ],
)
@pytest.mark.parametrize("stem", [{}, {"stem_stride": 2, "head": "shuffle", "refine_width": 4}])
def test_looks_linear_unet_is_linear_at_init(encoder, decoder_block, skips, norm, upsample, stem):
    """The whole network, head (and full-resolution refinement) included (batch norm in eval
    mode at init is a scaling)."""
    torch.manual_seed(0)
    net = UNet(
        1,
        2,
        depth=4,
        base_width=4,
        encoder=encoder,
        decoder_block=decoder_block,
        skips=skips,
        norm=norm,
        act="crelu",
        init="looks_linear",
        downsample="conv",
        upsample=upsample,
        blocks_per_level=2,
        **stem,
    ).eval()
    assert_linear(net, torch.randn(2, 1, 37, 45), torch.randn(2, 1, 37, 45))


def test_looks_linear_needs_crelu():
    with pytest.raises(ValueError, match="needs act 'crelu'"):
        UNet(1, 1, depth=3, base_width=4, init="looks_linear")
    with pytest.raises(ValueError, match="unknown init"):
        UNet(1, 1, depth=3, base_width=4, init="orthogonal")
    with pytest.raises(ValueError, match="needs act 'crelu'"):
        UNetConfig(init="looks_linear")
    with pytest.raises(ValueError, match="init applies to unetseg's own encoders"):
        UNetConfig(init="looks_linear", act="crelu", encoder="smp:resnet18")


# --------------------------------------------------------------------------- whole model


@pytest.mark.parametrize("depth", [3, 4, 5, 6])
@pytest.mark.parametrize("name", BLOCK_NAMES)
def test_unet_every_encoder_at_several_depths_and_odd_sizes(name, depth):
    torch.manual_seed(0)
    net = UNet(
        1,
        2,
        depth=depth,
        base_width=4,
        max_width=16,
        encoder=name,
        decoder_block=name,
        downsample="conv",
        zero_init_residual=False,  # else a residual block's inner convolutions get no gradient at step 0
    )
    x = torch.randn(2, 1, 37, 45)
    out = net(x)
    assert out.shape == (2, 2, 37, 45)
    out.square().mean().backward()
    conv = next(m for m in net.encoder.stages[0].modules() if isinstance(m, nn.Conv2d))  # the stem, if any
    assert conv.in_channels == 1 and conv.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize(
    "name, shortcut, downsample", combos(["residual", "preact", "highway", "dense"], SHORTCUTS, DOWNSAMPLES)
)
def test_unet_with_each_shortcut_option(name, shortcut, downsample):
    cfg = UNetConfig(
        depth=4,
        base_width=4,
        encoder=name,
        blocks_per_level=2,
        downsample="conv",
        shortcut=shortcut,
        shortcut_downsample=downsample,
        stochastic_depth=0.2 if name in RESIDUAL_BLOCKS else 0.0,
    )
    torch.manual_seed(0)
    net = build_model(cfg, 1, 2)
    out = net(torch.randn(2, 1, 37, 45))
    assert out.shape == (2, 2, 37, 45)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    shortcuts = [m for m in net.encoder.modules() if isinstance(m, ZeroPad)]
    assert bool(shortcuts) == (shortcut == "zero_pad" and name != "dense")


@pytest.mark.parametrize("name", BLOCK_NAMES)
def test_deep_encoder_with_more_than_70_convs_builds_and_trains(name):
    torch.manual_seed(0)
    net = UNet(1, 2, depth=5, base_width=4, max_width=8, encoder=name, blocks_per_level=8)
    convs = [m for m in net.encoder.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) >= 80  # 5 levels x 8 blocks x 2 3x3 convs (preact adds a stem)
    out = net(torch.randn(1, 1, 32, 32))
    out.square().mean().backward()
    assert torch.isfinite(out).all() and convs[0].weight.grad is not None


def test_blocks_per_level_range_and_weight_names():
    UNetConfig(blocks_per_level=16)
    with pytest.raises(ValueError):
        UNetConfig(blocks_per_level=17)
    for name in ("highway", "dense"):
        keys = list(UNet(1, 1, depth=3, base_width=4, encoder=name, blocks_per_level=2).state_dict())
        for level, j in itertools.product(range(3), range(2)):
            assert any(k.startswith(f"encoder.stages.{level}.blocks.{j}.") for k in keys), (name, level, j)
    keys = UNet(1, 1, depth=3, base_width=4, encoder="highway").state_dict()
    assert keys["encoder.stages.1.blocks.0.gate_bias"].shape == (8,)


def test_config_lists_every_block_and_rejects_typos():
    assert tuple(BLOCKS) == BLOCK_TYPES
    with pytest.raises(ValueError, match="did you mean 'highway'"):
        UNetConfig(encoder="higway")
    with pytest.raises(ConfigError, match="model.shortcut"):
        config_from_dict({"data": {"images": "i", "masks": "m"}, "model": {"shortcut": "zeropad"}})
    cfg = UNetConfig(
        depth=3,
        base_width=4,
        encoder="preact",
        decoder_block="highway",
        act="crelu",
        init="looks_linear",
        shortcut="zero_pad",
        shortcut_downsample="avgpool",
        stochastic_depth=0.1,
        zero_init_residual=False,
    )
    assert UNetConfig.model_validate(cfg.model_dump()) == cfg
    assert build_model(cfg, 1, 1)(torch.randn(1, 1, 13, 17)).shape == (1, 1, 13, 17)


def test_make_shortcut_rejects_unknown_options():
    with pytest.raises(ValueError, match="unknown shortcut 'pad'"):
        make_shortcut(4, 8, kind="pad")
    with pytest.raises(ValueError, match="unknown shortcut_downsample 'max'"):
        BlockOptions(shortcut_downsample="max")
