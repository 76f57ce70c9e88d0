"""Model inference for the jobs, apart from where it runs (as Merlin keeps ops apart from
runtimes): one journaled batch loop, layer-wise GraphSAGE over a graph (all rows or a
subset, in partitions) with interchangeable runners (in-process torch on the CPU or a
GPU, Triton), the sampled-subgraph path and the sentence encoder's length-sorted batches."""
