"""SDK generation. fastgate generates no client SDKs: GetSdkTypes lists none, and GetSdk and
GetSdkType answer AWS's NotFoundException for every type (after the API and stage checks
AWS makes first)."""

from __future__ import annotations

from fastgate.control.errors import NotFound
from fastgate.control.model.base import ModelBase
from fastgate.control.messages import aws_message


class Sdks(ModelBase):
    # ---- SDKs

    def get_sdk_types(self, p: dict) -> dict:
        return {"items": []}

    def get_sdk_type(self, p: dict) -> dict:
        raise NotFound(aws_message("sdk_type_not_found", type=p["id"]))

    def get_sdk(self, p: dict) -> dict:
        self.fresh()
        self._api(p["restApiId"])
        self._stage(p["restApiId"], p["stageName"])
        raise NotFound(aws_message("sdk_type_not_found", type=p["sdkType"]))
