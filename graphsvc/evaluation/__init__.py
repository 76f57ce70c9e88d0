"""What embeddings are worth: in-process inference for evaluation, ranking metrics,
index recall, and the report (JSON + HTML with PNG figures)."""
