"""Tiny MicroLens-shaped corpora written by the PE tests themselves (never the shared file)."""

from __future__ import annotations

import csv
from pathlib import Path

from llmpopcorn.corpus.table import ALL_COLUMNS

HEADER = list(ALL_COLUMNS)

ANIMAL = [
    "cute kitten chases a red laser dot",
    "golden retriever puppy meets a kitten",
    "parrot sings happy birthday to its owner",
    "corgi puppy tries to climb the stairs",
    "cat knocks a glass off the kitchen table",
    "dog waits for its owner at the train station",
    "hamster stuffs sunflower seeds in its cheeks",
    "horse gallops across a snowy meadow",
    "rescue dog sees snow for the first time",
    "two cats argue over a cardboard box",
    "duckling follows a farmer across the yard",
    "husky howls along with the piano",
]
GAME = [
    "speedrun world record in the castle level",
    "ranked match comeback with the last hero",
    "mobile game boss fight without armor",
    "building a giant castle in the block game",
    "funniest bugs in the new racing game",
    "sniper clutch in the final circle",
    "beginner guide to the card battle game",
    "new season skins review for the shooter",
    "team wipe in the arena tournament final",
    "secret level found behind the waterfall",
    "pixel farm game first harvest day",
    "horror game jump scare reaction",
    "strategy game rush defence tutorial",
    "open world game hidden treasure map",
    "fighting game combo practice session",
]
FOOD = [
    "crispy fried chicken with honey glaze",
    "grandma makes dumplings from scratch",
    "spicy hot pot night with friends",
    "five minute breakfast egg sandwich",
    "street food noodles in the night market",
    "chocolate cake that melts in the middle",
    "homemade pizza in a cast iron pan",
    "braised pork belly with soy sauce",
    "fresh mango sticky rice dessert",
    "roast duck sliced by a master chef",
]
SPORTS = [
    "basketball buzzer beater from half court",
    "marathon runner crosses the finish line",
    "skateboard trick at the city plaza",
]


def corpus_rows() -> list[dict[str, object]]:
    """40 videos in 4 categories; comment counts spread with deliberate ties."""
    rows: list[dict[str, object]] = []
    vid = 0
    for category, titles in (
        ("Animal", ANIMAL),
        ("Game", GAME),
        ("Delicacy", FOOD),
        ("Sports", SPORTS),
    ):
        for i, title in enumerate(titles):
            vid += 1
            rows.append(
                {
                    "video_id": str(vid),
                    "title_en": title,
                    "cover_desc": title,  # as in the shipped table: a copy of the title
                    "caption_en": "",
                    "partition": category,
                    "likes": 100 * (i + 1),
                    "views": 1000 * (i + 1),
                    # i // 2 makes pairs of equal counts: ties at every pool boundary
                    "comment_count": 5 + 10 * (i // 2),
                }
            )
    return rows


def write_corpus(
    root: Path, rows: list[dict[str, object]] | None = None, header: list[str] | None = None
) -> Path:
    """Write ``root/microlens/videos.csv`` and return ``root`` (the data directory)."""
    path = Path(root) / "microlens" / "videos.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = header or HEADER
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        for row in rows if rows is not None else corpus_rows():
            writer.writerow(row)
    return Path(root)


def write_study_data(root: Path, abstract: list[str], concrete: list[str]) -> Path:
    """A data directory for the study: the tiny corpus plus ``prompts/*_prompts.txt``."""
    write_corpus(root)
    (root / "prompts").mkdir(parents=True, exist_ok=True)
    (root / "prompts" / "abstract_prompts.txt").write_text("\n".join(abstract) + "\n")
    (root / "prompts" / "concrete_prompts.txt").write_text("\n".join(concrete) + "\n")
    return root


def real_data_dir() -> Path | None:
    """The MicroLens data folder when this machine has it: POPCORN_DATA (read at import
    time: the test environment is cleaned later), else ../shared/data beside the checkout."""
    import os

    for root in (
        os.environ.get("POPCORN_DATA"),
        Path(__file__).resolve().parents[2] / "shared" / "data",
    ):
        if root and (Path(root) / "microlens" / "videos.csv").exists():
            return Path(root)
    return None
