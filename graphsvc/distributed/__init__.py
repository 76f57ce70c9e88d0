"""The batch jobs on Ray: the same results as on one machine, the work split into partitions.

Importing this package does not import ray; the modules that run on Ray do.
"""
