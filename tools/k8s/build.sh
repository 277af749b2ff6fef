#!/usr/bin/env bash
# Build etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the kubelet for the
# tests/k8s test cluster (the last two run the real node: mlgitops/devcluster/node.py).
#
#   tools/k8s/build.sh                 build into the cache (no-op when already built)
#   tools/k8s/build.sh --print-bin-dir print the cache's bin directory and exit
#
# Binaries go to ${MLGITOPS_K8S_CACHE:-$HOME/.cache/mlgitops/k8s}/<key>/bin/, outside the
# clone; <key> names the kubernetes and etcd versions pinned by kube/go.mod and etcd/go.mod.
# Needs only Go (>= the go line of the two go.mod files) and the Go module proxy: sources
# come from the published modules k8s.io/kubernetes and go.etcd.io/etcd/server/v3, checked
# against the committed go.sum files. A cold build (empty module and build caches) took 10 min
# wall time on 2 cores, peak RSS 1.8 GiB (one link), ~0.8 GB module cache + ~2.9 GB build cache;
# the apiserver, kcm and etcd are ~213 MB. With a warm build cache a rebuild only links (~20 s);
# kubelet + kube-scheduler (~157 MB) added to a warm cache took about 1 min.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
k8s_version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$here/kube/go.mod")
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v/ {print $2; exit}' "$here/etcd/go.mod")
if [[ -z $k8s_version || -z $etcd_version ]]; then
    echo "build.sh: cannot read the kubernetes/etcd versions from $here/{kube,etcd}/go.mod" >&2
    exit 1
fi
cache=${MLGITOPS_K8S_CACHE:-$HOME/.cache/mlgitops/k8s}
bin_dir=$cache/$k8s_version-etcd$etcd_version/bin
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet)

if [[ ${1:-} == --print-bin-dir ]]; then
    echo "$bin_dir"
    exit 0
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--print-bin-dir]" >&2
    exit 2
fi

missing=()
for b in "${binaries[@]}"; do
    [[ -x $bin_dir/$b ]] || missing+=("$b")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "k8s test binaries (kubernetes $k8s_version, etcd $etcd_version) already in $bin_dir"
    exit 0
fi

command -v go >/dev/null || { echo "build.sh: go is not on PATH; it is needed to build ${missing[*]}" >&2; exit 1; }
echo "building ${missing[*]} (kubernetes $k8s_version, etcd $etcd_version) into $bin_dir"
start=$SECONDS

# Build into a scratch directory beside bin/, then move each binary in: an interrupted
# build never leaves a half-written binary that the check above would take for a good one.
mkdir -p "$bin_dir"
tmp=$(mktemp -d "$bin_dir/../build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

export CGO_ENABLED=0
# The go.mod files pin the go line; never fetch another toolchain behind the user's back.
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
# 2 parallel compiles: each kube link needs ~2 GiB; more parallelism does not help on 2 cores.
jobs=${MLGITOPS_K8S_BUILD_JOBS:-2}

k8s_minor=${k8s_version#v1.}
k8s_minor=${k8s_minor%%.*}
# As upstream hack/lib/version.sh does: without these, /version reports v0.0.0-master.
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
    k8s_ldflags+=" -X $pkg.gitTreeState=clean"
done

# -mod=readonly: go.sum is committed; a build must never rewrite it.
if [[ " ${missing[*]} " == *" etcd "* ]]; then
    (cd "$here/etcd" && go build -mod=readonly -p "$jobs" -trimpath -ldflags "-s -w" \
        -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
fi
kube=()
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
    [[ " ${missing[*]} " == *" $b "* ]] && kube+=("k8s.io/kubernetes/cmd/$b")
done
if [[ ${#kube[@]} -gt 0 ]]; then
    (cd "$here/kube" && go build -mod=readonly -p "$jobs" -trimpath -ldflags "$k8s_ldflags" \
        -o "$tmp/" "${kube[@]}")
fi

for b in "${missing[@]}"; do
    mv -f "$tmp/$b" "$bin_dir/$b"
done
echo "built ${missing[*]} in $((SECONDS - start)) s into $bin_dir"
