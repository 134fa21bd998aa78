#!/usr/bin/env python3
"""Writes the load benchmark's inputs into DIR: pod.json, a ~10 KB Pod CREATE review of a frontend
of DGD team-a/llama (the size of a real operator pod with its managedFields), and dgds.yaml,
10,000 DGDs over 100 k8s namespaces (team-a/llama among them) for the cache-size run."""
import json
import pathlib
import sys

out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
repo = pathlib.Path(__file__).resolve().parent.parent

review = json.loads((repo / "examples/reviews/pod-create.json").read_text())
pod = review["request"]["object"]
container = pod["spec"]["containers"][0]
# What the operator and the kubelet's defaults add to a real frontend pod.
for i in range(40):
    container["env"].append({"name": f"DYN_SETTING_{i:02d}", "value": f"value-{i:02d}-" + "x" * 24})
container["volumeMounts"] = [
    {"name": f"vol-{i}", "mountPath": f"/mnt/data/{i}", "readOnly": True} for i in range(12)
]
pod["spec"]["volumes"] = [{"name": f"vol-{i}", "configMap": {"name": f"cm-{i}"}} for i in range(12)]
pod["metadata"]["managedFields"] = [{
    "manager": "dynamo-operator", "operation": "Update", "apiVersion": "v1",
    "time": "2026-12-03T18:34:05Z", "fieldsType": "FieldsV1",
    "fieldsV1": {"f:spec": {"f:containers": {'k:{"name":"main"}': {
        "f:env": {f'k:{{"name":"{e["name"]}"}}': {".": {}, "f:name": {}, "f:value": {}}
                  for e in container["env"]}}}}},
}]
body = json.dumps(review)
(out / "pod.json").write_text(body)

docs = []
for i in range(10_000):
    ns = "team-a" if i == 0 else f"ns-{i % 100}"
    name = "llama" if i == 0 else f"dgd-{i}"
    path = "default/llama" if i == 0 else f"default/team-{i % 7}/model-{i}"
    docs.append({
        "apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment",
        "metadata": {"name": name, "namespace": ns, "uid": f"00000000-0000-0000-0000-{i:012d}",
                     "annotations": {"nvidia.com/dynamo-namespace-path": path}},
        "spec": {"dynamoNamespace": path},
    })
(out / "dgds.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
print(f"pod review: {len(body)} bytes; 10,000 DGDs written to {out}")
