"""What embeddings are worth: ranking metrics, index recall, and the report (JSON + HTML
with PNG figures); the embeddings themselves come from `graphsvc.inference`."""
