"""The Python a request may run: handed to the compiled core through the snapshot
(access checks, CORS, validation, mapping, VTL, compression, functions, Redis-backed
limits and cache). Imports fastgate._core, never the layers above it."""
