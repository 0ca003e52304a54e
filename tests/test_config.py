from dataclasses import dataclass, field
from typing import Literal

import pytest

from dream3d.config import ConfigError, load_config, merge, save_config, to_dict, from_dict


@dataclass
class Guidance:
    scale: float = 100.0
    t_range: tuple[float, float] = (0.02, 0.98)
    weighting: Literal["sds", "uniform"] = "sds"


@dataclass
class Run:
    steps: int = 10
    name: str = "run"
    lr: float = 1e-2
    use_thing: bool = False
    model: str | None = None
    guidance: Guidance = field(default_factory=Guidance)


def test_defaults_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 20\nguidance:\n  scale: 50\n")
    cfg = load_config(Run, path, ["guidance.weighting=uniform", "lr=1e-3", "use_thing=true", "model=foo/bar"])
    assert cfg.steps == 20
    assert cfg.guidance.scale == 50.0 and isinstance(cfg.guidance.scale, float)
    assert cfg.guidance.weighting == "uniform"
    assert cfg.guidance.t_range == (0.02, 0.98)  # untouched nested default kept
    assert cfg.lr == pytest.approx(1e-3)
    assert cfg.use_thing is True
    assert cfg.model == "foo/bar"


def test_override_wins_over_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 20\n")
    assert load_config(Run, path, ["steps=7"]).steps == 7


def test_unknown_keys_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="'guidance.scal'"):
        load_config(Run, None, ["guidance.scal=3"])
    path = tmp_path / "c.yaml"
    path.write_text("stpes: 3\n")
    with pytest.raises(ConfigError, match="'stpes'.*valid keys"):
        load_config(Run, path)


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("steps=abc", "'steps' must be an integer"),
        ("steps=1.5", "'steps' must be an integer"),
        ("use_thing=3", "'use_thing' must be true or false"),
        ("guidance.weighting=foo", "choose one of"),
        ("guidance.t_range=[0.1]", "needs 2 values"),
        ("guidance=3", "must be a mapping"),
        ("nokey", "is not key=value"),
    ],
)
def test_bad_values_are_one_line_errors(override, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(Run, None, [override])
    assert "\n" not in str(info.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Run, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Run, bad)


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_config(Run, None, ["guidance.scale=7.5", "name=x", "guidance.t_range=[0.2, 0.5]"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(Run, tmp_path / "config.yaml")
    assert again == cfg
    assert to_dict(again)["guidance"]["t_range"] == [0.2, 0.5]


def test_merge_checks_keys():
    cfg = from_dict(Run, {})
    assert merge(cfg, {"guidance.scale": 3}).guidance.scale == 3.0
    with pytest.raises(ConfigError, match="'guidance.nope'"):
        merge(cfg, {"guidance.nope": 1})
