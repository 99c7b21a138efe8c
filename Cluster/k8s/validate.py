"""Checks Kubernetes manifests offline; run by validate.sh (which provides kubernetes-validate).

usage: python validate.py VERSIONS PATH...   (VERSIONS: comma-separated, like 1.29.0,1.37.0)

Every document is checked against the Kubernetes OpenAPI schemas that kubernetes-validate
bundles, strictly (an unknown field is an error), for each version. On top of the schemas,
what the API server or kustomize would reject or silently get wrong:
  - a kind/apiVersion with no schema (kubernetes-validate only warns), an empty file
  - a workload whose selector does not match its pod template's labels
  - a named port in a probe or a Service's targetPort that no container declares
  - a Service or PodDisruptionBudget selecting no workload, a StatefulSet whose serviceName
    is not a headless Service in the set (checked when the set holds workloads / Services)
  - a kustomization.yaml listing a missing file, or a manifest beside it that it does not
    list, or an `images` entry that no container uses
Exit status 0 when all is well, 1 otherwise; one line per problem on stdout.
"""
import os
import sys

import kubernetes_validate
import yaml

errors = []


def error(where, message):
    errors.append(f"{where}: {message}")


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        error(path, f"cannot read YAML: {e}")
        return []
    if not docs:
        error(path, "no YAML documents")
    return docs


def name_of(doc):
    return f"{doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"


def pod_templates(resources):
    """(where, selector labels, template labels, pod spec) of each workload."""
    for path, doc in resources:
        spec = doc.get("spec") or {}
        if doc.get("kind") in ("StatefulSet", "Deployment", "DaemonSet", "ReplicaSet", "Job"):
            template = spec.get("template") or {}
            yield (f"{path}: {name_of(doc)}", (spec.get("selector") or {}).get("matchLabels") or {},
                   (template.get("metadata") or {}).get("labels") or {}, template.get("spec") or {})


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_schema(path, doc, versions):
    if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
        error(path, "a document without apiVersion and kind")
        return False
    if not (doc.get("metadata") or {}).get("name"):
        error(path, f"{doc['kind']} without metadata.name")
    for version in versions:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            error(path, f"{name_of(doc)}: no {doc['apiVersion']} {doc['kind']} in Kubernetes {version}")
            return False
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path) or "(top)"
            error(path, f"{name_of(doc)}: Kubernetes {version}: {where}: {e.message}")
    return True


def check_references(resources):
    workloads = list(pod_templates(resources))
    for where, selector, labels, pod in workloads:
        if not selects(selector, labels):
            error(where, f"selector {selector} does not match the pod template's labels {labels}")
        containers = (pod.get("containers") or []) + (pod.get("initContainers") or [])
        ports = {p.get("name") for c in containers for p in c.get("ports") or [] if p.get("name")}
        for c in containers:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                for kind in ("httpGet", "tcpSocket", "grpc"):
                    port = ((c.get(probe) or {}).get(kind) or {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        error(where, f"container {c.get('name')}: {probe} uses port '{port}', not a declared port name")
    for path, doc in resources:
        kind, spec = doc.get("kind"), doc.get("spec") or {}
        # References to other objects are checked when the set holds any of their kind, so a
        # single file can be validated alone.
        if kind == "Service" and spec.get("selector") and workloads:
            matching = [w for w in workloads if selects(spec["selector"], w[2])]
            if not matching:
                error(path, f"{name_of(doc)}: selector {spec['selector']} matches no pod template")
            for p in spec.get("ports") or []:
                target = p.get("targetPort")
                if isinstance(target, str) and not any(
                        target == cp.get("name") for w in matching for c in w[3].get("containers") or []
                        for cp in c.get("ports") or []):
                    error(path, f"{name_of(doc)}: targetPort '{target}' is no container port name of the pods it selects")
        if kind == "PodDisruptionBudget" and workloads:
            selector = (spec.get("selector") or {}).get("matchLabels") or {}
            if not any(selects(selector, w[2]) for w in workloads):
                error(path, f"{name_of(doc)}: selector {selector} matches no pod template")
        if kind == "StatefulSet":
            service = spec.get("serviceName")
            headless = [d for _, d in resources if d.get("kind") == "Service" and name_of(d) == f"Service/{service}"
                        and (d.get("spec") or {}).get("clusterIP") == "None"]
            if service and not headless and any(d.get("kind") == "Service" for _, d in resources):
                error(path, f"{name_of(doc)}: serviceName '{service}' is not a headless Service in these manifests")


def image_name(image):
    """The image without tag or digest: registry:5000/weft:1.0@sha256:… → registry:5000/weft."""
    image = image.split("@", 1)[0]
    head, _, tail = image.rpartition(":")
    return head if head and "/" not in tail else image


def check_kustomization(path):
    """The files a kustomization lists (which are then validated too), and its image names."""
    docs = load(path)
    if not docs:
        return [], []
    k = docs[0]
    if not isinstance(k, dict) or k.get("kind") != "Kustomization":
        error(path, "not a Kustomization")
        return [], []
    base = os.path.dirname(path) or "."
    listed = []
    for r in k.get("resources") or []:
        f = os.path.normpath(os.path.join(base, r))
        if os.path.isfile(f):
            listed.append(f)
        else:
            error(path, f"resource '{r}' does not exist")
    for n in sorted(os.listdir(base)):
        f = os.path.normpath(os.path.join(base, n))
        if n.endswith((".yaml", ".yml")) and f != os.path.normpath(path) and f not in listed:
            error(path, f"{n} is beside kustomization.yaml but not in its resources")
    return listed, [img.get("name") for img in k.get("images") or []]


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    versions = [v for v in sys.argv[1].split(",") if v]
    files, kustomizations = [], []
    for arg in sys.argv[2:]:
        if os.path.isdir(arg):
            for d, _, names in sorted(os.walk(arg)):
                for n in sorted(names):
                    if n.endswith((".yaml", ".yml")):
                        (kustomizations if n in ("kustomization.yaml", "kustomization.yml") else files).append(
                            os.path.normpath(os.path.join(d, n)))
        elif os.path.isfile(arg):
            is_kustomization = os.path.basename(arg) in ("kustomization.yaml", "kustomization.yml")
            (kustomizations if is_kustomization else files).append(os.path.normpath(arg))
        else:
            error(arg, "no such file or directory")
    if not files and not kustomizations:
        error(" ".join(sys.argv[2:]), "no manifests found")

    images_wanted = []
    for k in kustomizations:
        listed, names = check_kustomization(k)
        files += [f for f in listed if f not in files]
        images_wanted += [(n, k) for n in names]

    resources = []
    for f in files:
        for doc in load(f):
            if check_schema(f, doc, versions):
                resources.append((f, doc))
    check_references(resources)
    images = {image_name(c.get("image", "")) for _, _, _, pod in pod_templates(resources)
              for c in pod.get("containers") or []}
    for name, where in images_wanted:
        if name not in images:
            error(where, f"images: '{name}' is no container's image")

    for e in errors:
        print(f"ERROR {e}")
    print(f"{len(resources)} resources in {len(files)} files, {len(kustomizations)} kustomization(s), "
          f"Kubernetes {', '.join(versions)}: {'invalid' if errors else 'valid'} "
          f"(kubernetes-validate {kubernetes_validate.__version__})")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
