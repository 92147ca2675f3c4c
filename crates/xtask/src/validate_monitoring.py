"""Validates the prometheus-operator objects (ServiceMonitor, PrometheusRule) of rendered chart
files against the operator's CRD schemas, as PyPI's cloudcoil-models-prometheus-operator
generates them (pydantic models of the CRDs' OpenAPI schemas). Strict: an object must also
survive the round trip unchanged, so that a field the CRD does not know (which the models
would silently drop, as the API server prunes it) fails too. Usage: python THIS FILE...
"""

import sys

import yaml
from cloudcoil.models.prometheus_operator import v1

KINDS = {"ServiceMonitor": v1.ServiceMonitor, "PrometheusRule": v1.PrometheusRule}


def main():
    checked = 0
    failures = []
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as file:
            for document in yaml.safe_load_all(file):
                if not document or document.get("apiVersion") != "monitoring.coreos.com/v1":
                    continue
                name = f"{path}: {document['kind']} {document['metadata']['name']}"
                model = KINDS.get(document["kind"])
                if model is None:
                    failures.append(f"{name}: no schema for this kind")
                    continue
                try:
                    parsed = model.model_validate(document)
                except Exception as error:  # pydantic's ValidationError, reported as text
                    failures.append(f"{name}: {error}")
                    continue
                again = parsed.model_dump(by_alias=True, exclude_none=True, mode="json")
                if again != document:
                    failures.append(f"{name}: fields the CRD does not know: {document} became {again}")
                checked += 1
    for failure in failures:
        print(failure, file=sys.stderr)
    print(f"{checked} prometheus-operator objects checked, {len(failures)} invalid")
    sys.exit(1 if failures or checked == 0 else 0)


if __name__ == "__main__":
    main()
