"""One `Registry` behind every named choice: lazy loading, order, and the errors a user sees for a typo."""

from __future__ import annotations

import sys

import pytest

from focuskit.core.errors import ConfigError
from focuskit.core.registry import Registry


def _factory(size: int = 1, colour: str = "red") -> tuple[int, str]:
    return size, colour


def test_register_create_and_names_in_registration_order() -> None:
    reg: Registry = Registry("widget")
    reg.register("b", _factory)

    @reg.register("a")
    def _other(**kwargs: object) -> dict[str, object]:
        return kwargs

    assert reg.names() == ["b", "a"]
    assert reg.create("b", size=3) == (3, "red")
    assert reg.create("a", anything=1) == {"anything": 1}
    assert "a" in reg and "zzz" not in reg and len(reg) == 2


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("nope", {}, "unknown widget 'nope'; available: b"),
        ("b", {"sise": 2}, "widget 'b' does not take option(s) sise; it takes: size, colour"),
    ],
)
def test_errors_name_the_known_choices(name: str, options: dict, message: str) -> None:
    reg: Registry = Registry("widget")
    reg.register("b", _factory)
    with pytest.raises(ConfigError) as info:
        reg.create(name, **options)
    assert str(info.value) == message


def test_lazy_target_is_imported_only_when_asked_for(tmp_path, monkeypatch) -> None:
    (tmp_path / "fk_lazy_plugin.py").write_text("IMPORTED = True\ndef build(x=0):\n    return x * 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry = Registry("widget")
    reg.register_lazy("lazy", "fk_lazy_plugin:build")
    assert reg.names() == ["lazy"]
    assert "fk_lazy_plugin" not in sys.modules
    assert reg.create("lazy", x=4) == 8
    assert "fk_lazy_plugin" in sys.modules


def test_lazy_module_that_forgets_to_register_is_a_clear_error(tmp_path, monkeypatch) -> None:
    (tmp_path / "fk_lazy_empty.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry = Registry("engine")
    reg.register_lazy("ghost", "fk_lazy_empty")
    with pytest.raises(ConfigError, match="importing fk_lazy_empty did not register it"):
        reg.lookup("ghost")


def test_every_named_choice_uses_the_one_registry() -> None:
    from focuskit.backends import BACKENDS, create_backend
    from focuskit.data.registry import FORMATS, get_format
    from focuskit.localizers.base import LOCALIZERS, create_localizer
    from focuskit.models.encoders import ENCODERS, create_encoder
    from focuskit.models.proposals import PROPOSERS, create_proposer
    from focuskit.models.segmenters import SEGMENTERS, create_segmenter

    for reg in (BACKENDS, FORMATS, LOCALIZERS, ENCODERS, PROPOSERS, SEGMENTERS):
        assert isinstance(reg, Registry)
    calls = [
        (create_backend, "nope", "unknown backend 'nope'; available: hf, openai"),
        (get_format, "nope", "unknown dataset format 'nope'; available: got10k, lasot"),
        (create_localizer, "nope", "unknown engine 'nope'; available: matching, template, vlm"),
        (create_encoder, "nope", "unknown encoder 'nope'; available: mobilenetv2, efficientnet_lite0"),
        (create_proposer, "nope", "unknown proposer 'nope'; available: ssd, windows"),
        (create_segmenter, "nope", "unknown segmenter 'nope'; available: grabcut, box, sam, grounded_sam"),
    ]
    for create, name, message in calls:
        with pytest.raises(ConfigError) as info:
            create(name)
        assert str(info.value).startswith(message)
