"""Generated run names in MLflow's `<adjective>-<animal>-<number>` shape."""

from __future__ import annotations

import random

_ADJECTIVES = (
    "amber", "bold", "brisk", "calm", "clever", "crisp", "daring", "eager", "fancy", "gentle",
    "glad", "honest", "humble", "jolly", "keen", "lively", "lucky", "merry", "nimble", "polite",
    "proud", "quick", "quiet", "rapid", "silent", "sly", "steady", "sunny", "swift", "tidy",
    "vast", "warm", "wise", "witty", "zesty",
)
_ANIMALS = (
    "ant", "bat", "bear", "bee", "bison", "crab", "crow", "deer", "doe", "duck", "eel", "finch",
    "fox", "frog", "goat", "hare", "hawk", "ibis", "koala", "lark", "lynx", "mole", "moth",
    "newt", "otter", "owl", "panda", "quail", "ram", "seal", "shrew", "snail", "swan", "toad",
    "trout", "wasp", "whale", "wolf", "yak", "zebra",
)


def generate_run_name(rng: random.Random | None = None) -> str:
    r = rng or random
    return f"{r.choice(_ADJECTIVES)}-{r.choice(_ANIMALS)}-{r.randint(0, 999)}"
