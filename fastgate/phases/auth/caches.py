"""The warm state of a worker's authorizers: JWKS key sets, Lambda authorizer result
caches and the SigV4 replay cache, kept across routes and reloads so that routes sharing
an issuer or an authorizer share them, and a reload that leaves an authorizer unchanged
keeps its warm state."""

from __future__ import annotations

from fastgate.phases.auth.iam import ReplayCache
from fastgate.phases.auth.jwt import KeySet
from fastgate.phases.auth.lambda_authorizer import LambdaAuthorizer, ResultCache

REFETCH_INTERVAL_S = 10.0      # an unknown kid refetches an issuer's keys at most this often


class AuthCaches:
    """The warm state of authorizers, kept across routes and reloads.

    Call :meth:`sweep` after compiling a whole snapshot: what the new snapshot no longer
    uses is dropped."""

    def __init__(self, *, refetch_interval_s: float = REFETCH_INTERVAL_S):
        self.refetch_interval_s = refetch_interval_s
        self.replay = ReplayCache()
        self._keysets: dict[tuple, KeySet] = {}
        self._results: dict[tuple, ResultCache] = {}
        self._used: set[tuple] = set()

    def keyset(self, issuer: str, *, jwks_uri: str | None, jwks_file: str | None,
               http_client, refetch_interval_s: float | None = None) -> KeySet:
        interval = self.refetch_interval_s if refetch_interval_s is None else refetch_interval_s
        key = ("keys", issuer, jwks_uri, jwks_file, interval)
        self._used.add(key)
        ks = self._keysets.get(key)
        if ks is None:
            ks = KeySet(issuer=issuer, jwks_uri=jwks_uri, jwks_file=jwks_file,
                        http_client=http_client, refetch_interval_s=interval)
            self._keysets[key] = ks
        return ks

    def results(self, scope: str, authorizer: LambdaAuthorizer) -> ResultCache:
        """The result cache of one authorizer (``scope``: the API and authorizer id)."""
        key = ("results", scope, authorizer.cache_identity())
        self._used.add(key)
        cache = self._results.get(key)
        if cache is None:
            cache = ResultCache(authorizer.ttl_s)
            self._results[key] = cache
        return cache

    def sweep(self) -> None:
        for table in (self._keysets, self._results):
            for key in [k for k in table if k not in self._used]:
                del table[key]
        self._used = set()
