"""graphsvc batch jobs: one module per job; jobs share the library, never each other."""
