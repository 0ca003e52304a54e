from dataclasses import dataclass, field
from typing import ClassVar, Literal

import pytest

from dream3d.config import ConfigError, load_config, save_config, to_dict


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


def test_values_layer_sits_between_the_file_and_the_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 20\nguidance:\n  scale: 50\n")
    cfg = load_config(Run, path, ["steps=7"], values={"steps": 9, "guidance": {"t_range": [0.1, 0.2]}, "lr": 0.5})
    assert cfg.steps == 7 and cfg.lr == 0.5  # the override wins over the values
    assert cfg.guidance.scale == 50.0 and cfg.guidance.t_range == (0.1, 0.2)  # nested values merge with the file
    with pytest.raises(ConfigError, match="'guidance.nope'"):
        load_config(Run, None, values={"guidance": {"nope": 1}})


# -- parts chosen by ``kind:`` ------------------------------------------------------------------------


@dataclass(frozen=True)
class Shared:
    renamed_keys: ClassVar[dict[str, str]] = {"mode": "kind"}
    t_min: float = 0.02


@dataclass(frozen=True)
class Sds(Shared):
    kind: Literal["sds"] = "sds"
    scale: float = 100.0


@dataclass(frozen=True)
class Target(Shared):
    kind: Literal["target"] = "target"
    steps: int = 8


@dataclass
class Composed:
    guidance: Sds | Target = field(default_factory=Sds)


def test_kind_picks_the_class_and_keys_of_other_kinds_are_errors(tmp_path):
    assert load_config(Composed).guidance == Sds()
    cfg = load_config(Composed, None, ["guidance.kind=target", "guidance.steps=3"])
    assert cfg.guidance == Target(steps=3)
    with pytest.raises(ConfigError, match=r"'guidance.scale' \(kind 'target'\)") as info:
        load_config(Composed, None, ["guidance.kind=target", "guidance.scale=50"])
    assert "valid keys here: kind, steps, t_min" in str(info.value)
    with pytest.raises(ConfigError, match="'guidance.kind' is 'vsd'; choose one of 'sds', 'target'"):
        load_config(Composed, None, ["guidance.kind=vsd"])
    path = tmp_path / "c.yaml"
    path.write_text("guidance:\n  kind: target\n  scale: 5\n")
    with pytest.raises(ConfigError, match="'guidance.scale'"):
        load_config(Composed, path)


def test_switching_kind_keeps_shared_keys_and_drops_the_others(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("guidance:\n  kind: target\n  steps: 4\n  t_min: 0.2\n")
    cfg = load_config(Composed, path, ["guidance.kind=sds"])
    assert cfg.guidance == Sds(t_min=0.2)  # t_min is shared; target's steps does not leak into sds
    assert load_config(Composed, path, ["guidance.mode=sds"]) == cfg  # the old name of kind
    assert load_config(Composed, path, ["guidance.t_min=0.3"]).guidance == Target(steps=4, t_min=0.3)
    both = tmp_path / "both.yaml"
    both.write_text("guidance:\n  mode: sds\n  kind: target\n")
    with pytest.raises(ConfigError, match="'mode' and 'kind' are the same setting"):
        load_config(Composed, both)


def test_kind_round_trips_and_dataclass_values_replace_the_part(tmp_path):
    cfg = load_config(Composed, None, ["guidance.kind=target"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(Composed, tmp_path / "config.yaml") == cfg
    assert load_config(Composed, tmp_path / "config.yaml", values={"guidance": Sds(scale=3.0)}).guidance == Sds(
        scale=3.0
    )
