"""Put this folder on PYTHONPATH to run a Python that cannot see torch, transformers or
sentence-transformers (what the base install has): their imports and find_spec fail."""

import sys

BLOCKED = ("torch", "transformers", "sentence_transformers", "torchvision", "torchaudio")


class _Blocker:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: base install)", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
