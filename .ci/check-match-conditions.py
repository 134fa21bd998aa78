#!/usr/bin/env python3
"""Evaluates the webhooks' matchConditions (CEL) of rendered manifests against real and edge-case
admission requests, with cel-python (a CEL implementation independent of the API server's cel-go).

The API server calls a webhook only when all its conditions are true, and an evaluation error counts
as a failed call (with failurePolicy Fail: a denied request). So each condition must compile, give a
bool without error for every input, including pods with no labels, no env and no init containers,
and select exactly the requests the rules need.

usage: check-match-conditions.py SHARED_DIR RENDERED.yaml...
"""

import copy
import json
import sys

import celpy
import yaml

DGD_LABEL = "nvidia.com/dynamo-graph-deployment-name"
PATH_KEY = "nvidia.com/dynamo-namespace-path"


def captured(shared, name):
    with open(f"{shared}/captured/{name}") as f:
        return json.load(f)["request"]


def with_meta(request, which, field, key, value):
    """A copy of `request` with metadata.<field>[key] of `which` (object/oldObject) set, or removed
    when value is None."""
    request = copy.deepcopy(request)
    meta = request[which]["metadata"]
    values = meta.setdefault(field, {})
    if value is None:
        values.pop(key, None)
    else:
        values[key] = value
    return request


def bare_pod(containers, init_containers=None, labels=None):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "team-x"},
           "spec": {"containers": containers}}
    if init_containers is not None:
        pod["spec"]["initContainers"] = init_containers
    if labels is not None:
        pod["metadata"]["labels"] = labels
    return {"operation": "CREATE", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "team-x", "object": pod, "oldObject": None}


def pod_cases(shared):
    create = captured(shared, "pod-create-generatename-validate.json")
    plain = captured(shared, "pod-create-plain-mutate.json")
    touched = captured(shared, "pod-update-label-validate.json")  # an unrelated label added
    env = lambda *names: [{"name": n, "value": "team-x"} for n in names]  # noqa: E731
    labelled = with_meta(touched, "oldObject", "labels", PATH_KEY, "default.a")
    labelled = with_meta(labelled, "object", "labels", PATH_KEY, "default.a")
    annotated = with_meta(touched, "oldObject", "annotations", PATH_KEY, "default/a")
    annotated = with_meta(annotated, "object", "annotations", PATH_KEY, "default/a")
    no_labels = copy.deepcopy(touched)
    for which in ("object", "oldObject"):
        no_labels[which]["metadata"].pop("labels", None)
        no_labels[which]["metadata"].pop("annotations", None)
    return [
        ("captured: CREATE of a DGD's pod", create, True),
        ("captured: the same, mutating view", captured(shared, "pod-create-generatename-mutate.json"), True),
        ("captured: CREATE of a plain pod", plain, False),
        ("captured: UPDATE adding an unrelated label", touched, False),
        ("UPDATE adding the path label", with_meta(touched, "object", "labels", PATH_KEY, "default.a"), True),
        ("UPDATE keeping the path label", labelled, False),
        ("UPDATE changing the path label", with_meta(labelled, "object", "labels", PATH_KEY, "default.b"), True),
        ("UPDATE removing the path label", with_meta(labelled, "object", "labels", PATH_KEY, None), True),
        ("UPDATE adding the path annotation", with_meta(touched, "object", "annotations", PATH_KEY, "default/a"), True),
        ("UPDATE keeping the path annotation", annotated, False),
        ("UPDATE changing the path annotation",
         with_meta(annotated, "object", "annotations", PATH_KEY, "default/b"), True),
        ("UPDATE removing the path annotation",
         with_meta(annotated, "object", "annotations", PATH_KEY, None), True),
        ("UPDATE of pods without labels or annotations", no_labels, False),
        ("CREATE, no labels, no env, no init containers", bare_pod([{"name": "a"}]), False),
        ("CREATE, empty env lists", bare_pod([{"name": "a", "env": []}], [{"name": "i", "env": []}]), False),
        ("CREATE, labels without the DGD label", bare_pod([{"name": "a"}], labels={"app": "x"}), False),
        ("CREATE, other env only", bare_pod([{"name": "a", "env": env("DYNAMO_NAMESPACE", "PATH")}]), False),
        ("CREATE, DYN_NAMESPACE in a container", bare_pod([{"name": "a"}, {"name": "b", "env": env("DYN_NAMESPACE")}]), True),
        ("CREATE, DYN_NAMESPACE_PREFIX in a container", bare_pod([{"name": "a", "env": env("DYN_NAMESPACE_PREFIX")}]), True),
        ("CREATE, DYN_NAMESPACE in an init container only",
         bare_pod([{"name": "a"}], [{"name": "i"}, {"name": "j", "env": env("X", "DYN_NAMESPACE")}]), True),
        ("CREATE, DYN_NAMESPACE_PREFIX from valueFrom",
         bare_pod([{"name": "a", "env": [{"name": "DYN_NAMESPACE_PREFIX",
                                          "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]}]), True),
        ("CREATE, the DGD label and nothing else", bare_pod([{"name": "a"}], labels={DGD_LABEL: "x"}), True),
    ]


def dgd_cases(shared):
    update = captured(shared, "dgd-update-validate.json")
    terminating = copy.deepcopy(update)
    terminating["oldObject"]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    terminating["object"]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    deleting_now = copy.deepcopy(update)
    deleting_now["object"]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return [
        ("captured: CREATE", captured(shared, "dgd-create-mutate.json"), True),
        ("captured: CREATE, validating view", captured(shared, "dgd-create-validate.json"), True),
        ("captured: CREATE, dry run", captured(shared, "dgd-create-dryrun-validate.json"), True),
        ("captured: UPDATE", update, True),
        ("captured: UPDATE, server-side apply", captured(shared, "dgd-update-ssa-validate.json"), True),
        ("UPDATE of a DGD being deleted (finalizer removal)", terminating, False),
    ]


def evaluate(env, expression, request):
    program = env.program(env.compile(expression))
    activation = {
        "object": celpy.json_to_cel(request.get("object")),
        "oldObject": celpy.json_to_cel(request.get("oldObject")),
        "request": celpy.json_to_cel(request),
    }
    return program.evaluate(activation)


def main():
    shared, files = sys.argv[1], sys.argv[2:]
    env = celpy.Environment()
    cases = {"pod": pod_cases(shared), "dgd": dgd_cases(shared)}
    failures = 0
    checked = 0
    for path in files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            if doc.get("kind") not in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
                continue
            for hook in doc.get("webhooks", []):
                conditions = hook.get("matchConditions", [])
                subject = hook["name"].split(".")[0]
                for title, request, expected in cases[subject]:
                    verdicts = []
                    for condition in conditions:
                        try:
                            verdict = evaluate(env, condition["expression"], request)
                        except Exception as e:  # a compile or evaluation error
                            verdict = e
                        verdicts.append(verdict)
                    errors = [v for v in verdicts if not isinstance(v, (bool, celpy.celtypes.BoolType))]
                    # A hook without conditions (the mutating pod webhook: objectSelector) is called
                    # for every request its rules match.
                    called = not errors and all(bool(v) for v in verdicts)
                    checked += 1
                    if errors:
                        failures += 1
                        print(f"FAIL {path}: {hook['name']}: {title}: evaluation error {str(errors[0])[:300]}")
                    elif conditions and called != expected:
                        failures += 1
                        print(f"FAIL {path}: {hook['name']}: {title}: called={called}, expected {expected}")
    if checked == 0:
        print("no webhooks found", file=sys.stderr)
        return 2
    print(f"matchConditions: {checked} evaluations, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
