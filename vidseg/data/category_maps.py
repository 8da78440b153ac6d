"""Built-in class tables of the standard datasets and the COCO -> video-dataset category maps.

The class lists (index + 1 = official category id) let a model be built or a result be rendered without the
annotation file at hand. The COCO maps are the tables used for joint COCO pseudo-video training by VITA,
GenVIS and GRAtt-VIS (``COCO_TO_<TGT>``) and by DeVIS (``COCO_TO_YT19/YT21_CATEGORY_MAP``): COCO category id
-> target category id. They are many-to-one (bicycle and motorcycle -> motorbike), so the inverse is a list.
"""

from __future__ import annotations

# fmt: off
YTVIS_2019_CLASSES = (
    "person", "giant_panda", "lizard", "parrot", "skateboard", "sedan", "ape", "dog", "snake", "monkey",
    "hand", "rabbit", "duck", "cat", "cow", "fish", "train", "horse", "turtle", "bear",
    "motorbike", "giraffe", "leopard", "fox", "deer", "owl", "surfboard", "airplane", "truck", "zebra",
    "tiger", "elephant", "snowboard", "boat", "shark", "mouse", "frog", "eagle", "earless_seal",
    "tennis_racket",
)

YTVIS_2021_CLASSES = (
    "airplane", "bear", "bird", "boat", "car", "cat", "cow", "deer", "dog", "duck",
    "earless_seal", "elephant", "fish", "flying_disc", "fox", "frog", "giant_panda", "giraffe", "horse",
    "leopard", "lizard", "monkey", "motorbike", "mouse", "parrot", "person", "rabbit", "shark", "skateboard",
    "snake", "snowboard", "squirrel", "surfboard", "tennis_racket", "tiger", "train", "truck", "turtle",
    "whale", "zebra",
)

OVIS_CLASSES = (
    "Person", "Bird", "Cat", "Dog", "Horse", "Sheep", "Cow", "Elephant", "Bear", "Zebra",
    "Giraffe", "Poultry", "Giant_panda", "Lizard", "Parrot", "Monkey", "Rabbit", "Tiger", "Fish", "Turtle",
    "Bicycle", "Motorcycle", "Airplane", "Boat", "Vehical",  # "Vehical": the official OVIS spelling
)

COCO_TO_YTVIS_2019 = {
    1: 1, 2: 21, 3: 6, 4: 21, 5: 28, 7: 17, 8: 29, 9: 34, 17: 14, 18: 8, 19: 18, 21: 15, 22: 32, 23: 20,
    24: 30, 25: 22, 35: 33, 36: 33, 41: 5, 42: 27, 43: 40,
}
COCO_TO_YTVIS_2021 = {
    1: 26, 2: 23, 3: 5, 4: 23, 5: 1, 7: 36, 8: 37, 9: 4, 16: 3, 17: 6, 18: 9, 19: 19, 21: 7, 22: 12, 23: 2,
    24: 40, 25: 18, 34: 14, 35: 31, 36: 31, 41: 29, 42: 33, 43: 34,
}
# DeVIS's own tables (COCO joint training, devis.md §3.8): like VITA's without skis (35) -> snowboard, and for
# YT-21 without sports ball (34) -> flying_disc and skis, but with mouse (74).
COCO_TO_YT19_CATEGORY_MAP = {
    1: 1, 2: 21, 3: 6, 4: 21, 5: 28, 7: 17, 8: 29, 9: 34, 17: 14, 18: 8, 19: 18, 21: 15, 22: 32, 23: 20,
    24: 30, 25: 22, 36: 33, 41: 5, 42: 27, 43: 40,
}
COCO_TO_YT21_CATEGORY_MAP = {
    1: 26, 2: 23, 3: 5, 4: 23, 5: 1, 7: 36, 8: 37, 9: 4, 16: 3, 17: 6, 18: 9, 19: 19, 21: 7, 22: 12, 23: 2,
    24: 40, 25: 18, 36: 31, 41: 29, 42: 33, 43: 34, 74: 24,
}
COCO_TO_OVIS = {
    1: 1, 2: 21, 3: 25, 4: 22, 5: 23, 6: 25, 8: 25, 9: 24, 17: 3, 18: 4, 19: 5, 20: 6, 21: 7, 22: 8, 23: 9,
    24: 10, 25: 11,
}
# fmt: on

# target name -> (class names, COCO map)
TARGETS: dict[str, tuple[tuple[str, ...], dict[int, int]]] = {
    "ytvis_2019": (YTVIS_2019_CLASSES, COCO_TO_YTVIS_2019),
    "ytvis_2021": (YTVIS_2021_CLASSES, COCO_TO_YTVIS_2021),
    "ovis": (OVIS_CLASSES, COCO_TO_OVIS),
    "ytvis_2019_devis": (YTVIS_2019_CLASSES, COCO_TO_YT19_CATEGORY_MAP),
    "ytvis_2021_devis": (YTVIS_2021_CLASSES, COCO_TO_YT21_CATEGORY_MAP),
}


def coco_category_map(target: str) -> dict[int, int]:
    """COCO category id -> ``target`` category id; ``target``: ``ytvis_2019``, ``ytvis_2021`` or ``ovis``."""
    if target not in TARGETS:
        raise KeyError(f"no COCO category map for {target!r}; known: {sorted(TARGETS)}")
    return dict(TARGETS[target][1])


def invert_category_map(mapping: dict[int, int]) -> dict[int, list[int]]:
    """Target id -> sorted source ids (the maps are many-to-one)."""
    inv: dict[int, list[int]] = {}
    for src, dst in sorted(mapping.items()):
        inv.setdefault(dst, []).append(src)
    return inv
