"""A process that owns a runtime, spawns one workload and then waits to be killed.

Failure mode 14's tests run it as a real OS process, read the one JSON line it
prints (the handle's details and the lease end), then ``kill -9`` it: the
workload must still stop by ``lease_end + stop_grace``.

    python tests/_runtime_owner.py process STATE_DIR LEASE STOP_GRACE
    python tests/_runtime_owner.py podman|docker STATE_DIR LEASE STOP_GRACE IMAGE OPTIONS

``OPTIONS`` is a JSON object of the container runtime's keyword arguments
(what points it at the tests' private engine, ``tests/_engines.py``).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import anyio


async def main(argv: list[str]) -> None:
    kind, state_dir, lease, grace = argv[1], argv[2], float(argv[3]), float(argv[4])
    runtime: Any
    if kind == "process":
        from standby.adapters.process import ProcessRuntime

        runtime = ProcessRuntime(state_dir, provider="owner", stop_grace=grace)
        spec: Any = {"argv": ["sleep", "600"]}
    else:
        from _engines import RUNTIMES

        image, options = argv[5], json.loads(argv[6])
        runtime = RUNTIMES[kind](state_dir, provider="owner", stop_grace=grace, **options)
        spec = {"image": image, "command": ["sleep", "600"]}
    lease_end = time.time() + lease
    handle = await runtime.spawn(spec, workload_id="fm14", fencing_token=7, lease_end=lease_end)
    print(json.dumps({"lease_end": lease_end, "handle": repr(handle)}), flush=True)
    await anyio.sleep(3600)


if __name__ == "__main__":
    anyio.run(main, sys.argv)
