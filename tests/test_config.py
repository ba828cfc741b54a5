"""The config schema: strict keys with hints, types, per-level lists, --set overrides, loading."""

from __future__ import annotations

import copy

import pytest
from conftest import REPO, write_yaml

from unetseg.config import Config, ConfigError, UNetConfig, apply_overrides, config_from_dict, dump_config, load_config


def _error(tree: dict) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(tree, "test.yaml")
    return str(info.value)


def test_minimal_config_gets_documented_defaults(tiny_cfg_dict):
    cfg = config_from_dict({"data": tiny_cfg_dict["data"]})
    assert isinstance(cfg.model, UNetConfig)
    assert cfg.model.depth == 5 and cfg.model.skips == "concat"
    assert cfg.model.skip_modes == ["concat"] * 4
    assert cfg.data.num_classes == 2 and cfg.data.out_channels == 1


def test_unknown_key_names_dotted_key_and_suggests(tiny_cfg_dict):
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["model"]["depht"] = 4
    msg = _error(tree)
    assert "test.yaml" in msg
    assert "model.depht" in msg
    assert "did you mean 'depth'" in msg


@pytest.mark.parametrize(
    "section, typo, right",
    [("train", "epoch", "epochs"), ("augment", "crop_sise", "crop_size"), ("inference", "overlpa", "overlap")],
)
def test_unknown_key_hint_in_other_sections(tiny_cfg_dict, section, typo, right):
    tree = copy.deepcopy(tiny_cfg_dict)
    tree[section][typo] = 1
    msg = _error(tree)
    assert f"{section}.{typo}" in msg and f"did you mean '{right}'" in msg


def test_unknown_key_in_nested_and_reference_model_sections(tiny_cfg_dict):
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["data"]["split"]["fodls"] = 3
    msg = _error(tree)
    assert "data.split.fodls" in msg and "'folds'" in msg

    tree = copy.deepcopy(tiny_cfg_dict)
    tree["model"] = {"arch": "smp_unet", "encoder_dpeth": 3}
    msg = _error(tree)
    assert "model.encoder_dpeth" in msg and "'encoder_depth'" in msg


def test_unknown_top_level_section(tiny_cfg_dict):
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["trian"] = {"epochs": 3}
    msg = _error(tree)
    assert "trian: unknown key" in msg and "'train'" in msg


def test_wrong_type_names_the_key(tiny_cfg_dict):
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["train"]["epochs"] = "many"
    msg = _error(tree)
    assert "train.epochs" in msg
    assert "'many'" in msg


def test_out_of_range_value_names_the_key(tiny_cfg_dict):
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["model"]["depth"] = 1
    assert "model.depth" in _error(tree)


@pytest.mark.parametrize("scale", [[1.4, 0.7], [0.0, 1.0]])
def test_affine_scale_range_checked(tiny_cfg_dict, scale):
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["augment"]["affine"] = {"p": 0.5, "scale": scale}
    assert "augment.affine" in _error(tree) and "0 < low <= high" in _error(tree)


def test_missing_required_section():
    msg = _error({"model": {"depth": 3}})
    assert "data: required key is missing" in msg


@pytest.mark.parametrize("skips", [["concat"], ["concat", "add", "none"]])
def test_per_level_skips_of_wrong_length_rejected(tiny_cfg_dict, skips):
    tree = copy.deepcopy(tiny_cfg_dict)  # depth 3 -> 2 skip levels
    tree["model"]["skips"] = skips
    msg = _error(tree)
    assert "skips" in msg and "expected 2 entries" in msg and f"got {len(skips)}" in msg


def test_per_level_skips_of_right_length_accepted(tiny_cfg_dict):
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["model"]["skips"] = ["none", "add"]
    assert config_from_dict(tree).model.skip_modes == ["none", "add"]


def test_invalid_skip_mode_rejected(tiny_cfg_dict):
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["model"]["skips"] = "concta"
    assert "model.skips" in _error(tree)


def test_encoder_typo_suggests_block_type(tiny_cfg_dict):
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["model"]["encoder"] = "residul"
    msg = _error(tree)
    assert "encoder 'residul'" in msg and "did you mean 'residual'" in msg


def test_label_map_must_cover_classes(tiny_cfg_dict):
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["data"]["label_map"] = {0: 0, 255: 2}  # class 1 missing
    assert "label_map" in _error(tree)
    tree["data"]["label_map"] = {0: 0, 128: 1, 255: 2}
    cfg = config_from_dict(tree)
    assert cfg.data.num_classes == 3 and cfg.data.out_channels == 3


def test_split_fold_range_checked(tiny_cfg_dict):
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["data"]["split"] = {"mode": "block", "folds": 3, "fold": 3}
    assert "fold must lie in" in _error(tree)


def test_overrides_parse_yaml_values(tiny_cfg_file):
    cfg = load_config(
        tiny_cfg_file,
        [
            "train.epochs=7",
            "train.lr=3e-4",
            "train.channels_last=true",
            "model.skips=[none, add]",
            "data.label_map={0: 1, 255: 0}",
            "train.max_time_s=null",
            "name=renamed",
        ],
    )
    assert cfg.train.epochs == 7 and isinstance(cfg.train.epochs, int)
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.channels_last is True
    assert cfg.model.skips == ["none", "add"]
    assert cfg.data.label_map == {0: 1, 255: 0}
    assert cfg.train.max_time_s is None
    assert cfg.name == "renamed"


def test_override_creates_missing_section_and_is_validated(tiny_cfg_file):
    cfg = load_config(tiny_cfg_file, ["eval.regions=background"])
    assert cfg.eval.regions == "background"
    with pytest.raises(ConfigError, match=r"model\.depht.*did you mean 'depth'"):
        load_config(tiny_cfg_file, ["model.depht=3"])


def test_override_errors(tiny_cfg_file):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(tiny_cfg_file, ["train.epochs"])
    with pytest.raises(ConfigError, match="not a section"):
        load_config(tiny_cfg_file, ["name.sub=1"])


def test_apply_overrides_value_may_contain_equals():
    tree = apply_overrides({}, ["name=a=b"])
    assert tree == {"name": "a=b"}


def test_missing_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_is_config_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {depth: 3\ntrain: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_binary_file_is_config_error(tmp_path):
    path = tmp_path / "c_bin.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match=r"c_bin\.yaml is not a UTF-8 text file"):
        load_config(path)


def test_override_that_is_not_yaml_names_its_key(tiny_cfg_file):
    with pytest.raises(ConfigError, match=r"--set train\.epochs: '\[1' is not a valid YAML value"):
        load_config(tiny_cfg_file, ["train.epochs=[1"])


def test_non_mapping_top_level_is_config_error(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_dump_round_trip(tiny_cfg_dict, tmp_path):
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["model"]["skips"] = ["add", "none"]
    tree["data"]["label_map"] = {0: 1, 255: 0}
    cfg = config_from_dict(tree)
    dumped = dump_config(cfg)
    again = load_config(write_yaml(tmp_path / "dumped.yaml", dumped))
    assert again == cfg
    assert dump_config(again) == dumped


def test_reference_model_sections(tiny_cfg_dict):
    for model, cls_name in [
        ({"arch": "smp_unet", "encoder": "resnet18"}, "SmpUnetConfig"),
        ({"arch": "monai_basicunet"}, "MonaiBasicUNetConfig"),
        ({"arch": "monai_unet", "channels": [4, 8, 16], "strides": [2, 2]}, "MonaiUNetConfig"),
    ]:
        tree = copy.deepcopy(tiny_cfg_dict)
        tree["model"] = model
        assert type(config_from_dict(tree).model).__name__ == cls_name
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["model"] = {"arch": "monai_unet", "channels": [4, 8, 16], "strides": [2]}
    assert "strides" in _error(tree)


@pytest.mark.parametrize("name", ["isbi.yaml", "isbi_cpu.yaml"])
def test_shipped_configs_validate(name):
    cfg = load_config(REPO / "configs" / name)
    assert isinstance(cfg, Config)
    assert cfg.data.label_map == {0: 1, 255: 0}


def test_config_changes_names_nested_keys(tiny_cfg_dict):
    from unetseg.config import config_changes, dump_config

    cfg = config_from_dict(tiny_cfg_dict)
    stored = dump_config(cfg)
    assert config_changes(stored, cfg) == []
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["train"]["loss"] = {"lambda_dice": 2.0}
    tree["data"]["label_map"] = {0: 0, 255: 1, 128: 1}
    tree["seed"] = 5
    tree["output_dir"] = "moved/elsewhere"
    assert config_changes(stored, config_from_dict(tree)) == ["data.label_map", "seed", "train.loss.lambda_dice"]


# --------------------------------------------------------------------------- issue #27: one message, not a traceback


@pytest.mark.parametrize("seed, fragment", [(-5, "greater than or equal to 0"), (2**32, "less than 4294967296")])
def test_seed_outside_numpys_range_is_one_message(tiny_cfg_dict, seed, fragment):
    """NumPy seeds must lie in [0, 2**32): a negative seed ended in numpy's traceback."""
    msg = _error({**tiny_cfg_dict, "seed": seed})
    assert f"seed: Input should be {fragment} (got {seed})" in msg
    assert config_from_dict({**tiny_cfg_dict, "seed": 2**32 - 1}).seed == 2**32 - 1


def test_unquoted_off_gets_a_hint_to_quote_it(tiny_cfg_dict, tmp_path):
    text = write_yaml(tmp_path / "c.yaml", tiny_cfg_dict).read_text().replace("train:\n", "train:\n  amp: off\n", 1)
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "c.yaml")
    assert (
        "train.amp: Input should be 'auto', 'off', 'bf16' or 'fp16' (got False); YAML reads an unquoted "
        "off/no/false as False: quote it, amp: 'off'" in str(info.value)
    )
    (tmp_path / "c.yaml").write_text(text.replace("amp: off", "amp: 'off'"))
    assert load_config(tmp_path / "c.yaml").train.amp == "off"
    assert "YAML reads" not in _error({**tiny_cfg_dict, "inference": {"mode": False}})  # no boolean word to suggest


BILLION_LAUGHS = "\n".join(
    ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    + ["data: {images: *a8, masks: m}"]
)


@pytest.mark.parametrize(
    "text", [BILLION_LAUGHS, "a: &a [1, *a]\ndata: {images: i, masks: m}"], ids=["bomb", "recursive"]
)
def test_yaml_alias_bomb_is_refused_at_once(tmp_path, text):
    """Nine lines that expand to 10**9 values: validation (and the error's repr) walked them all,
    ending in a MemoryError, and ``data check --config`` spun for minutes."""
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(
        ConfigError, match=f"{path}: its aliases .* expand it to more than 100,000 values, or into itself"
    ):
        load_config(path)
    with pytest.raises(ConfigError, match="--set data.images: its aliases"):
        apply_overrides({}, ["data.images=&x [*x]"])
    assert time.perf_counter() - start < 2.0


def test_yaml_aliases_within_limits_still_work_and_size_is_bounded(tiny_cfg_dict, tmp_path):
    from unetseg.config.loading import MAX_YAML_BYTES

    path = write_yaml(tmp_path / "c.yaml", tiny_cfg_dict)
    text = path.read_text()
    path.write_text(text.replace("  depth: 3\n", "  depth: &d 3\n", 1).replace("  epochs: 2\n", "  epochs: *d\n", 1))
    assert load_config(path).train.epochs == 3
    path.write_text("# " + "x" * MAX_YAML_BYTES)
    with pytest.raises(ConfigError, match="characters of YAML; a config is at most"):
        load_config(path)


def test_yaml_python_tags_never_run_code(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.yaml"
    path.write_text(f'name: !!python/object/apply:pathlib.Path.touch ["{marker}"]\ndata: {{images: i, masks: m}}\n')
    with pytest.raises(ConfigError, match=f"{path} is not valid YAML"):
        load_config(path)
    assert not marker.exists()


@pytest.mark.parametrize("override", ["train.lr=inf", "train.lr=nan", "train.weight_decay=-inf", "augment.gamma=nan"])
def test_non_finite_numbers_are_refused_naming_the_key(override):
    """Probe #13: `--set train.lr=inf` was accepted and trained into NaN weights."""
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}: Input should be a finite number"):
        load_config(REPO / "configs" / "isbi_cpu.yaml", [override])


@pytest.mark.parametrize(
    "where, words", [("/", "the file system's root"), (".", "the folder unetseg runs in"), ("..", "a folder above")]
)
def test_output_dir_must_be_a_folder_of_its_own(tmp_path, monkeypatch, where, words):
    monkeypatch.chdir(tmp_path / ".." if where == ".." else tmp_path)
    config = REPO / "configs" / "isbi_cpu.yaml"
    with pytest.raises(ConfigError, match=rf"output_dir: {where} is {words}"):
        load_config(config, [f"output_dir={where}"])
    assert load_config(config, ["output_dir=runs/mine"]).output_dir.name == "mine"
