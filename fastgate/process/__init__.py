"""The processes: supervisor (no event loop), workers (uvloop) and the admin
process, and the signals between them."""
