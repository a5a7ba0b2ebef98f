"""moto's standalone server for the AWS integration tests: a real process on a loopback
port (``python tests/moto_server.py PORT``), which the gateway reaches over HTTP as it
would reach AWS, SigV4 and all.

Step Functions' state machines really run here (moto's own interpreter, its
``execute_state_machine`` setting), and StartSyncExecution, which moto's server does not
answer, is answered from it: the execution started, waited for (at most 20 s), described.
Nothing else of moto is changed.
"""

from __future__ import annotations

import sys
import time


def start_sync_execution(self):
    """AWSStepFunctions.StartSyncExecution over moto's interpreter (EXPRESS semantics:
    the whole execution in one call)."""
    import datetime

    from moto.core.responses import ActionResult

    backend = self.stepfunction_backend
    execution = backend.start_execution(self._get_param("stateMachineArn"),
                                        self._get_param("name") or f"sync-{time.time_ns()}",
                                        self._get_param("input", if_none="{}"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        described = backend.describe_execution(execution.execution_arn)
        if str(getattr(described.status, "value", described.status)) != "RUNNING":
            break
        time.sleep(0.01)
    status = str(getattr(described.status, "value", described.status))
    out = {"executionArn": execution.execution_arn, "stateMachineArn": described.state_machine_arn,
           "name": described.name, "startDate": described.start_date,
           "stopDate": described.stop_date or datetime.datetime.now(datetime.timezone.utc),
           "status": "SUCCEEDED" if status == "SUCCEEDED" else ("TIMED_OUT" if status == "RUNNING" else "FAILED"),
           "input": described.execution_input}
    if status == "SUCCEEDED":
        output = described.output
        out["output"] = output if isinstance(output, str) else __import__("json").dumps(output)
    if described.error is not None:
        out["error"] = described.error
    if described.cause is not None:
        out["cause"] = described.cause
    return ActionResult(out)


def main() -> None:
    port = sys.argv[1]
    from moto.core.config import default_user_config
    default_user_config.setdefault("stepfunctions", {})["execute_state_machine"] = True
    from moto.stepfunctions.responses import StepFunctionResponse
    StepFunctionResponse.start_sync_execution = start_sync_execution
    from moto.server import main as serve
    serve(["-H", "127.0.0.1", "-p", port])


if __name__ == "__main__":
    main()
