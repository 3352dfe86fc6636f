"""citebot's retrieval library: ingest, chunk, embed, store, retrieve, answer.

Reads no config file and no environment: every function takes explicit arguments.
Heavy modules (torch, sentence-transformers) are imported only where embedding happens.
"""
