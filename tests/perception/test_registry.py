"""The perception registry: specs collected from the backend modules, packages and weight files as
functions of a backend's config, composites (the fusion) answering for their sub-backends."""

from __future__ import annotations

import pytest

from crashcast.config import load_config
from crashcast.perception import registry
from crashcast.perception.models.fusion import FusionConfig
from crashcast.runtime import packages


def _own(stage: str, name: str) -> list[str]:
    cfg = registry.config_class(stage, name)()
    return list(registry.spec(stage, name).requires(cfg))


def test_builtins_are_collected_from_their_modules() -> None:
    builtin = {"detector": {"classic-motion", "fusion", "grounding-dino", "yolo"}, "segmenter": {"classic-box", "sam2"},
               "tracker": {"bytetrack", "sam2-video"}, "flow": {"classic-flow", "raft"},
               "depth": {"classic-ground", "depth-anything-v2", "video-depth-anything"}}
    for stage, names in builtin.items():  # (other tests register test backends too)
        assert names <= set(registry.available(stage))
        for name in names:
            s = registry.spec(stage, name)
            assert (s.stage, s.name) == (stage, name) and s.factory.__module__.startswith("crashcast.perception.")


@pytest.mark.parametrize("detectors,expected", [
    (["classic-motion"], set()),
    (["yolo"], {"torch", "ultralytics"}),
    (["grounding-dino"], {"torch", "transformers"}),
    (["yolo", "grounding-dino"], {"torch", "ultralytics", "transformers"}),
])
def test_fusion_requires_follow_its_detectors(detectors: list[str], expected: set[str]) -> None:
    cfg = FusionConfig(detectors=detectors)
    own = set(_own("detector", "fusion"))
    subs = set().union(*(_own("detector", d) for d in detectors))
    assert set(registry.requires("detector", cfg)) == own | subs
    assert expected <= set(registry.requires("detector", cfg))
    if detectors == ["classic-motion"]:  # no model detector: only what the fusion itself imports
        assert set(registry.requires("detector", cfg)) == own


def test_fusion_weights_are_its_detectors() -> None:
    paper = load_config("paper").perception.detector
    assert [w.name for w in registry.weights("detector", paper)] == ["yolov8x.pt", "IDEA-Research/grounding-dino-tiny"]
    only_yolo = FusionConfig(detectors=[{"name": "yolo", "weights": "yolov8n.pt"}])
    assert [w.name for w in registry.weights("detector", only_yolo)] == ["yolov8n.pt"]


def test_a_missing_package_is_one_line_naming_the_extra(monkeypatch) -> None:
    real = packages.missing
    monkeypatch.setattr(packages, "missing", lambda names: [n for n in real(names)] + [n for n in names if n == "ultralytics"])
    cfg = load_config("tiny").perception.detector
    with pytest.raises(packages.MissingPackages) as e:
        registry.create("detector", cfg)
    msg = str(e.value)
    assert "\n" not in msg and "ultralytics" in msg and '".[vision]"' in msg, msg


def test_an_unimportable_torchvision_is_one_line_pointing_to_the_doctor(monkeypatch) -> None:
    monkeypatch.setattr(packages, "torchvision_problem", lambda: "RuntimeError: operator torchvision::nms does not exist")
    cfg = load_config("tiny").perception.flow  # raft: torch + torchvision
    with pytest.raises(packages.MissingPackages) as e:
        registry.create("flow", cfg)
    msg = str(e.value)
    assert "\n" not in msg and "torchvision::nms" in msg and "crashcast doctor" in msg, msg


def test_a_fusion_config_validates_in_a_fresh_process() -> None:
    """Its sub-detectors are typed before anything has loaded the registry (a library user building
    one directly), and a nested fusion is refused for what it is."""
    import subprocess
    import sys

    code = ("from crashcast.perception.models.fusion import FusionConfig\n"
            "c = FusionConfig(detectors=['yolo', {'name': 'grounding-dino', 'box_threshold': 0.3}])\n"
            "assert [type(d).__name__ for d in c.detectors] == ['YoloConfig', 'GroundingDinoConfig']\n"
            "assert FusionConfig.model_validate_json(c.model_dump_json()) == c\n"
            "try:\n    FusionConfig(detectors=['fusion'])\nexcept ValueError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "another fusion" in out.stdout, out.stdout
