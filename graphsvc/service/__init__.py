"""Answering similarity queries: `queries` is the one path the `graphsvc similar/search`
commands and the HTTP service (`graphsvc serve`: `app`, its ASGI front `guard`, its
request and answer shapes `schemas`) answer through, over indexes the `reloader` keeps
current, the store (`store_access`), filtered `top_k` and structured `filters`."""
