"""The models and their files: GraphSAGE built from PyG's SAGEConv with the workshop
checkpoint's layout (`graphsage`), what travels beside a checkpoint (`checkpoints`), the
sentence encoder and its tokenizer (`text`), and the Triton model repository — versions,
`config.pbtxt` (`repository`)."""
