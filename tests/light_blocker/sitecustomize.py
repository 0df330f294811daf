"""Put this folder on PYTHONPATH to run a Python that cannot see torch, transformers or
sentence-transformers (what the base install has): their imports and find_spec fail."""

import os
import sys

BLOCKED = ("torch", "transformers", "sentence_transformers", "torchvision", "torchaudio")


class _Blocker:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: base install)", name=name)
        return None


sys.meta_path.insert(0, _Blocker())

# A hang in a test's subprocess (or in a Ray actor it starts, whose stderr reaches the driver) shows where it
# waits: every process dumps its threads' stacks to stderr each $SENTEMB_TEST_DUMP_AFTER seconds.
if os.environ.get("SENTEMB_TEST_DUMP_AFTER"):
    import faulthandler

    faulthandler.dump_traceback_later(float(os.environ["SENTEMB_TEST_DUMP_AFTER"]), repeat=True)
