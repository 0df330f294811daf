"""`python -m sentemb.demo`: encode a few sentences with the default model and print their similarities."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

import sentemb

SENTENCES = [
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "A man is playing a guitar.",
    "Someone plays an instrument.",
]


def main() -> None:
    encoder = sentemb.load()
    vectors = encoder.encode(SENTENCES)
    scores = sentemb.cos_sim(vectors, vectors)
    print(encoder)
    print(table(SENTENCES, scores))


def table(sentences: list[str], scores: npt.ArrayLike) -> str:
    """The score matrix with a sign column, so negative scores line up with positive ones."""
    matrix = np.asarray(scores, dtype=np.float64)
    width = max(len(s) for s in sentences)
    lines = [" " * (width + 2) + " ".join(f"{f'[{i}]':>7}" for i in range(len(sentences)))]
    for i, sentence in enumerate(sentences):
        cells = " ".join(f"{matrix[i, j]:7.4f}" for j in range(len(sentences)))
        lines.append(f"{sentence:<{width}}  {cells}  [{i}]")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
