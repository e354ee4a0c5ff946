"""Training data of the training tests (embedder, reranker, ``sieve train``): made-up code words, which mean
nothing to MiniLM, and what each stands for; query groups with one positive and one negative passage."""

from __future__ import annotations

# Made-up code words (no meaning to MiniLM) and what each stands for.
CODES = {
    "blorvak": "The recipe needs flour, butter and two eggs.",
    "quenzil": "The train to Lyon leaves from platform nine.",
    "dramfet": "Mount Everest is the highest mountain on Earth.",
    "skelvin": "The patient was given antibiotics for the infection.",
    "trosmap": "Interest rates were raised by the central bank.",
    "plixund": "The violin concerto was performed in Vienna.",
    "wembrog": "Solar panels convert sunlight into electricity.",
    "fazzlot": "The goalkeeper saved a penalty in the final minute.",
}

GROUPS = [
    ("which fruit is yellow", "Bananas are yellow when ripe.", ["The train leaves at noon."]),
    ("how do plants make sugar", "Photosynthesis turns light into sugar.", ["Volcanoes erupt ash."]),
]
