from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from focuskit.core.config import load_config, save_config
from focuskit.core.errors import ConfigError


@dataclass
class Inner:
    margin: float = 0.1
    layers: Literal["first_k", "last_k", "all"] = "first_k"


@dataclass
class Outer:
    lr: float = 1e-4
    steps: int = 10
    name: str = "x"
    shots: list[int] = field(default_factory=lambda: [1, 2])
    out: Path | None = None
    inner: Inner = field(default_factory=Inner)


def test_yaml_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.001\ninner:\n  margin: 0.5\nshots: [1, 4]\nout: runs/a\n")
    cfg = load_config(Outer, f, ["steps=20", "inner.layers=all"])
    assert cfg.lr == 0.001 and cfg.steps == 20 and cfg.shots == [1, 4]
    assert cfg.inner == Inner(0.5, "all") and cfg.out == Path("runs/a")


def test_round_trip(tmp_path: Path) -> None:
    cfg = Outer(lr=0.5, inner=Inner(0.2, "last_k"), out=Path("x/y"))
    save_config(cfg, tmp_path / "s.yaml")
    assert load_config(Outer, tmp_path / "s.yaml") == cfg


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lrr: 1", r"unknown key 'lrr' in .*c.yaml \(Outer\); known keys: .*lr"),
        ("inner:\n  margn: 1", r"unknown key 'margn' in .*inner \(Inner\)"),
        ("steps: 1.5", r"steps: expected an integer, got 1.5"),
        ("inner:\n  layers: middle", r"must be one of \['first_k', 'last_k', 'all'\]"),
        ("- 1\n- 2", "must be a mapping"),
        ("lr: [", "not valid YAML"),
    ],
)
def test_errors_name_the_key_and_file(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(Outer, f)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Outer, "/nonexistent/c.yaml")


def test_override_that_is_not_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"override 'shots=\[1, 2': the value is not valid YAML"):
        load_config(Outer, None, ["shots=[1, 2"])


def test_shipped_pekit_config_is_the_defaults() -> None:
    """configs/pekit.yaml says it lists every key with its default: a user copying it must get today's behaviour."""
    import dataclasses

    from focuskit.models.encoders import create_encoder
    from focuskit.models.proposals import create_proposer
    from focuskit.personalize.config import PeKitConfig

    shipped = load_config(PeKitConfig, Path(__file__).resolve().parent.parent / "configs" / "pekit.yaml")
    default = PeKitConfig()
    # The YAML spells out the encoder's and proposer's own defaults; they must build the same encoder and proposer.
    assert (
        create_encoder(shipped.encoder.name, **shipped.encoder.options).name
        == create_encoder(default.encoder.name, **default.encoder.options).name
    )
    proposer = vars(create_proposer(default.proposer.name, **default.proposer.options))
    assert all(proposer[k] == v for k, v in shipped.proposer.options.items())
    assert dataclasses.replace(shipped, encoder=default.encoder, proposer=default.proposer) == default
