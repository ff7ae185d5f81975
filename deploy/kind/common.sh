# shellcheck shell=bash disable=SC2034
# Shared settings of deploy/kind/up and deploy/kind/down (sourced, not run).

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER="${AGENTRUN_KIND_CLUSTER:-agentrun}"
NAMESPACE="${AGENTRUN_NAMESPACE:-agentrun}"
RELEASE="${AGENTRUN_RELEASE:-agentrun}"
TAG="${AGENTRUN_IMAGE_TAG:-dev}"
IMAGE_PREFIX="${AGENTRUN_IMAGE_PREFIX:-agentrun.local}"
KIND="${KIND:-kind}"
# Prefer the pinned tools from tools/install-kube-tools.
if [[ -x "$REPO/.tools/bin/helm" ]]; then
    PATH="$REPO/.tools/bin:$PATH"
fi
export PATH

need() {
    local tool
    for tool in "$@"; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "error: $tool is required on PATH (helm/kubectl: tools/install-kube-tools)" >&2
            exit 1
        fi
    done
}
