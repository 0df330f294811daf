"""From vectors to answers: quantised output vectors, an ANN index with rescoring, dedup and clustering.

Modules: ``quantize`` (int8/uint8/binary output, sentence-transformers-compatible), ``vectors``
(vector files in and out), ``index`` + ``stores`` + ``indexfile`` (``sentemb.Index`` on usearch),
``dedup`` (near-duplicate groups), ``cluster`` (community detection, k-means, HDBSCAN).
"""
