"""graphsvc: graph-native recommendations over an ArangoDB-shaped store, Triton and FAISS."""

__version__ = "0.1.0"
