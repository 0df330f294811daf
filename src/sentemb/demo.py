"""`python -m sentemb.demo`: encode a few sentences with the default model and print their similarities."""

from __future__ import annotations

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
    width = max(len(s) for s in SENTENCES)
    print(" " * (width + 2) + " ".join(f"{i:>6}" for i in range(len(SENTENCES))))
    for i, sentence in enumerate(SENTENCES):
        print(f"{sentence:<{width}}  " + " ".join(f"{scores[i, j]:6.4f}" for j in range(len(SENTENCES))) + f"  [{i}]")


if __name__ == "__main__":
    main()
