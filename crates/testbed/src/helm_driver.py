"""Runs one action of the real Helm library (PyPI's helm-sdkpy, Helm v4's Go code) and prints
the outcome as one JSON object on stdout: {"ok": true, "result": ...} or {"ok": false,
"error": "..."}. testbed::helm writes this file into its venv and runs it with the path of a
JSON request file as its argument:

  {"action": "lint", "chart": PATH}
  {"action": "install", "chart": PATH, "release": NAME, "namespace": NS,
   "values": {...}, "kubeconfig": YAML}

The caller sets HOME and the HELM_*_HOME folders to a scratch folder (the library probes them
when a Configuration is made) and HELM_DRIVER=memory (no release Secret, which Helm would send
as protobuf).
"""

import asyncio
import json
import sys
import traceback


def lint(request):
    import helm_sdkpy

    config = helm_sdkpy.Configuration(namespace="default")
    return asyncio.run(helm_sdkpy.Lint(config).run(request["chart"]))


def install(request):
    import helm_sdkpy

    # The kubeconfig as a YAML string, not a path: then client-go keeps no discovery cache on
    # disk that could hide what the API server serves now.
    config = helm_sdkpy.Configuration(
        namespace=request["namespace"], kubeconfig=request["kubeconfig"]
    )
    return asyncio.run(
        helm_sdkpy.Install(config).run(
            request["release"],
            request["chart"],
            values=request.get("values") or None,
            # Waiting needs watches of Deployment status that no kubelet would ever update.
            wait=False,
            timeout=60,
        )
    )


ACTIONS = {"lint": lint, "install": install}


def main():
    with open(sys.argv[1], encoding="utf-8") as request_file:
        request = json.load(request_file)
    action = ACTIONS.get(request.get("action"))
    if action is None:
        outcome = {"ok": False, "error": f"unknown action {request.get('action')!r}"}
    else:
        try:
            outcome = {"ok": True, "result": action(request)}
        except Exception as error:  # every failure goes back to Rust as data
            outcome = {
                "ok": False,
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(),
            }
    json.dump(outcome, sys.stdout, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
