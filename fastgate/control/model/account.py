"""The Account: the CloudWatch role ARN and features it holds, and the account-wide throttle
(fastgate's gateway-wide `throttle:` when the config sets one)."""

from __future__ import annotations

from fastgate.control.errors import BadRequest
from fastgate.control.model.base import ModelBase, _clone
from fastgate.control.model.patching import patch_operations, refuse

ACCOUNT_PATCH = {"replace": ("/cloudwatchRoleArn",), "add": ("/features",), "remove": ("/features",)}
# AWS's account-level defaults, shown when the config has no gateway-wide throttle
AWS_ACCOUNT_THROTTLE = {"burstLimit": 5000, "rateLimit": 10000.0}
ACCOUNT_FEATURES = ("UsagePlans",)


class Account(ModelBase):
    # ---- the account

    def _account(self) -> dict:
        return self.state.extra.get("account", {}).get("", {}).get("account") or {}

    def _account_view(self, account: dict) -> dict:
        out = {"apiKeyVersion": "4", "features": list(account.get("features", ["UsagePlans"])),
               "throttleSettings": self.account_throttle() or dict(AWS_ACCOUNT_THROTTLE)}
        if account.get("cloudwatchRoleArn"):
            out["cloudwatchRoleArn"] = account["cloudwatchRoleArn"]
        return out

    def get_account(self, p: dict) -> dict:
        self.fresh()
        return self._account_view(self._account())

    def update_account(self, p: dict) -> dict:
        with self.change() as txn:
            account = _clone(self._account())
            for op in patch_operations(p, "UpdateAccount"):
                path, value = op.get("path"), op.get("value")
                if op["op"] not in ACCOUNT_PATCH or path not in ACCOUNT_PATCH[op["op"]]:
                    raise refuse(op, ACCOUNT_PATCH)
                if path == "/cloudwatchRoleArn":
                    if value and not str(value).startswith("arn:"):
                        raise BadRequest(f"Invalid ARN specified in the request: {value}")
                    account["cloudwatchRoleArn"] = value or ""
                    continue
                if value not in ACCOUNT_FEATURES:
                    raise BadRequest(f"Invalid feature specified: {value}")
                features = account.setdefault("features", ["UsagePlans"])
                if op["op"] == "add" and value not in features:
                    features.append(value)
                elif op["op"] == "remove" and value in features:
                    features.remove(value)
            txn.put("account", "", "account", account)
        return self._account_view(account)
