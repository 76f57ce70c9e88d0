"""Serving our models with NVIDIA Triton: find the `tritonserver` binary (`binary`), turn the
model repository into one its Python backend can run (`runtime_repository`), run and watch
the server process (`process`, `python_stubs`), and talk to it (`client`, with `retry` and
`shm` for backoff and shared-memory requests); `cli` is the `graphsvc triton` command group."""
