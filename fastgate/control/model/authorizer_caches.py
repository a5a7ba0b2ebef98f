"""FlushStageAuthorizersCache: a stage's authorizer results forgotten. Each stage's cached
results are kept under a generation of the stage (fastgate/compile/apis.py passes it to the
authorizer caches' scope); the flush moves the stage to a new generation and the reload it
triggers drops the old one's results in every worker."""

from __future__ import annotations

from fastgate.control.model.base import ModelBase, _clone

GENERATION = "_authorizerCacheGeneration"     # a stage's field, never shown


class AuthorizerCaches(ModelBase):
    # ---- authorizer caches

    def flush_stage_authorizers_cache(self, p: dict) -> dict:
        with self.change() as txn:
            self._api(p["restApiId"])
            stage = _clone(self._stage(p["restApiId"], p["stageName"]))
            stage[GENERATION] = int(stage.get(GENERATION, 0)) + 1
            txn.put("stage", p["restApiId"], stage["stageName"], stage)
        return {}
