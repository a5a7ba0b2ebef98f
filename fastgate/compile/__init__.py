"""Config and control-plane state -> the immutable Snapshot the hot path reads:
the config schema and loader, API stages -> mounts, access rules -> checks,
key tables, TLS contexts. Imports fastgate.phases and fastgate._core."""
