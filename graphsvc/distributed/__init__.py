"""The batch jobs on a Ray cluster (`--executor ray`), with the same results as on one machine.

What runs where (DistDGL's and GraphStorm's layer-wise inference): the nodes split into
partitions (`partitions`: contiguous ranges of a locality-aware order, each with its halo
— the neighbours it needs from other partitions); per layer every partition's rows and
halo rows are routed to it, its neighbour means are computed where it runs, and an
actor holding one Triton client applies the layer (`layerwise`; the graph-aware movie
model's relation means the same way, `relational`); sentences go through
Ray Data's `map_batches` over a pool of such actors (`texts`); workers write Parquet
shards that one loader writes back into the store, and the IVF index and every row's
top k are computed by Ray tasks on the local pass's cells (`publish`, `index`).

Only `partitions` is importable without Ray (`pip install graphsvc[ray]`); the local
executor never imports this package's Ray modules.
"""
