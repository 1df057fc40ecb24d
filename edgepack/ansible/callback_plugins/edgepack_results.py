"""Ansible callback: each host's outcome of an edgepack playbook, as JSON for `edgepack`.

Enabled by edgepack (ANSIBLE_CALLBACKS_ENABLED=edgepack_results), it writes to the file
named by EDGEPACK_ANSIBLE_RESULTS: per host, "ok" / "failed" / "unreachable", the error
message of a failure, and the stdout of every task named "edgepack <step>".
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: edgepack_results
    type: aggregate
    short_description: per-host outcomes of edgepack playbooks, for the edgepack CLI
    description: Writes a JSON file (EDGEPACK_ANSIBLE_RESULTS) with each host's outcome.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "edgepack_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.hosts = {}

    def _entry(self, name):
        return self.hosts.setdefault(name, {"status": "ok", "error": None, "steps": {}, "started": time.time()})

    def _host(self, result):
        entry = self._entry(result._host.get_name())
        entry["seconds"] = round(time.time() - entry["started"], 2)  # first task start to last result
        return entry

    def v2_runner_on_start(self, host, task):
        self._entry(host.get_name())

    def v2_runner_on_ok(self, result):
        host = self._host(result)
        name = result._task.name or ""  # without the "role : " prefix get_name() adds
        if name.startswith("edgepack ") and "stdout" in result._result:
            host["steps"][name[len("edgepack "):]] = result._result["stdout"]

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if ignore_errors:
            return
        host = self._host(result)
        reply = result._result
        lines = [line for line in str(reply.get("stderr") or reply.get("msg") or "").splitlines() if line.strip()]
        host["status"], host["error"] = "failed", (lines[-1] if lines else "failed")

    def v2_runner_on_unreachable(self, result):
        host = self._host(result)
        lines = [line for line in str(result._result.get("msg", "")).splitlines() if line.strip()]
        host["status"], host["error"] = "unreachable", (lines[-1] if lines else "unreachable")

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("EDGEPACK_ANSIBLE_RESULTS")
        if path:
            with open(path, "w", encoding="utf-8") as fh:
                json.dump(self.hosts, fh, indent=2)
