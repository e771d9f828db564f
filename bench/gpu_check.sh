#!/usr/bin/env bash
# The device check: the tests marked `gpu`, generation against min-dalle (mini and mega, 1 and 9 candidates),
# and whole runs of a 16:9 expand, a zoom 2×, a dream of 100 steps and a ×4 upscale, in one script that
# fits the 8 minutes a lent GPU machine gives a check. Every figure lands in $OUT (a temporary folder when
# OUT is unset): one log per step and summary.txt with each step's figures, its status and the card's name.
#
#     bash bench/gpu_check.sh                              # on a CUDA machine: published sizes
#     bash bench/gpu_check.sh --device cpu --preset tiny   # the same steps on tiny models (its test)
#
# A step that fails (or passes its time cap, STEP_CAP_*) is marked FAILED in the summary and the later steps
# still run; the exit status is 1 if any step failed. $OUT holds at most 8 files (the device tool brings back 8).
#
# What only a GPU shows, and how the script handles it:
# - JAX and torch share the card: JAX would preallocate 75 % of its memory at start, so preallocation is off
#   and JAX's pool is capped at XLA_PYTHON_CLIENT_MEM_FRACTION (0.5), leaving the rest to torch's VQGAN, CLIP
#   and upscaler in the same process.
# - JAX must not fall back to the CPU silently when its CUDA plugin is missing: with --device cuda the
#   benchmarks run with JAX_PLATFORMS=cuda, so a JAX without a GPU fails the step instead of timing the CPU.
# - Compile caches: each generation run starts from an empty persistent cache (its first call is a real
#   compile, reported apart as "compile s"); the timed calls are the second ones. The canvas runs and the
#   upscale have a 2-step warm-up (cuDNN's algorithm search, CUDA's context) before the timed whole run.
# - dtypes: generation compares each side at its best on a GPU: edalle's sampler in bfloat16, min-dalle in
#   float16 (its documented speed setting); the expander runs under bf16 autocast on CUDA and the upscaler
#   in float16 (their own defaults).
#
# Through the device tool (see its README): the machine has Python 3.12 with torch, jax[cuda], flax, msgpack,
# numpy, ml-dtypes, pillow, tokenizers, huggingface_hub, safetensors, pyyaml, tqdm, regex, timm, torchvision,
# aiohttp, yarl, einops, pytest; it lacks, of pyproject.toml's dependencies and the test oracles, these, which
# travel as wheels (about 11 MB; min-dalle is an sdist on PyPI, so its wheel is built here):
#
#     echo /.whl/ >> .git/info/exclude
#     P='--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64'
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $P -d .whl \
#         open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.2.13 kornia==0.9.0 kornia_rs==0.2.0 spandrel==0.4.2 \
#         emoji==2.16.0 unidecode==1.4.0 confusable-homoglyphs==3.3.1 python-dotenv==1.2.4 discord.py==2.7.1 \
#         aiosqlite==0.22.1
#     python3 -m pip wheel --no-deps -w .whl min-dalle==0.4.11
#
# then one call of the tool's `run`, carry ['.whl'], timeout_s 570:
#
#     python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#         .whl/*.whl && export PYTHONPATH=/tmp/site || exit; bash bench/gpu_check.sh
#
# and the figures come back from $OUT. Python is $PYTHON, else python3.
set -u

DEVICE=cuda
PRESET=real
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="${2:?--device needs cpu or cuda}"; shift 2 ;;
        --preset) PRESET="${2:?--preset needs tiny or real}"; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1 (use --device cpu|cuda, --preset tiny|real)" >&2; exit 2 ;;
    esac
done
case "$DEVICE" in cpu|cuda) ;; *) echo "--device must be cpu or cuda, not $DEVICE" >&2; exit 2 ;; esac
case "$PRESET" in tiny|real) ;; *) echo "--preset must be tiny or real, not $PRESET" >&2; exit 2 ;; esac

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2
PY="${PYTHON:-python3}"
OUT="${OUT:-$(mktemp -d -t edalle-gpu-check-XXXXXX)}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}"
SCRATCH="$(mktemp -d -t edalle-gpu-check-scratch-XXXXXX)"  # caches and weights: never in $OUT (8 files back)
trap 'rm -rf "$SCRATCH"' EXIT
export EDALLE_DATA_DIR="$SCRATCH/data"
if [ "$DEVICE" = cuda ]; then BENCH_ENV=(env JAX_PLATFORMS=cuda); else BENCH_ENV=(env JAX_PLATFORMS=cpu); fi

# Step caps in seconds (a step past its cap is killed and marked FAILED); together under 8 minutes.
if [ "$PRESET" = real ]; then
    CAP_TESTS=${STEP_CAP_TESTS:-40} CAP_MINI=${STEP_CAP_MINI:-130} CAP_MEGA=${STEP_CAP_MEGA:-210} CAP_OPS=${STEP_CAP_OPS:-100}
    MINI=mini MEGA=mega
    # ours 1 and 9 against min-dalle's 1 and 9 (a 3×3 grid); one round: a lent GPU has nothing else running
    GEN_ARGS=(--device "$DEVICE" --counts 1,9 --min-dalle-counts 1,9 --rounds 1 --rank)
    OPS_ARGS=(--device "$DEVICE" --scale real)
else
    CAP_TESTS=${STEP_CAP_TESTS:-120} CAP_MINI=${STEP_CAP_MINI:-240} CAP_MEGA=${STEP_CAP_MEGA:-240} CAP_OPS=${STEP_CAP_OPS:-240}
    MINI=tiny MEGA=tiny  # both generation steps on the tiny model: the plumbing, not the figures
    # min-dalle's side decodes with its full-size VQGAN whatever the model: one candidate keeps it short
    # one torch thread: on a shared 2-core CPU two OpenMP threads stall at every barrier (bench/expansion.py)
    GEN_ARGS=(--device "$DEVICE" --counts 1,9 --min-dalle-counts 1 --rounds 1 --rank --torch-threads 1)
    OPS_ARGS=(--device "$DEVICE" --scale tiny --steps 3 --dream-steps 3 --upscale-side 64 --threads 1)
fi
if [ "$DEVICE" = cuda ]; then
    GEN_ARGS+=(--dtype bfloat16 --min-dalle-dtype float16)
else
    GEN_ARGS+=(--dtype float32 --min-dalle-dtype float32)
fi

FAILED=()
say() { echo "$*" | tee -a "$SUMMARY"; }

# run_step NAME CAP PATTERN COMMAND…: the command's output goes to $OUT/NAME.log; the summary gets its status,
# time and the log's lines that match PATTERN (grep -E), which are the step's figures.
run_step() {
    local name="$1" cap="$2" pattern="$3"
    shift 3
    local log="$OUT/$name.log" started rc
    started=$(date +%s)
    timeout --kill-after=10 "$cap" "$@" >"$log" 2>&1
    rc=$?
    local seconds=$(( $(date +%s) - started ))
    if [ $rc -eq 0 ]; then
        say "## $name: ok (${seconds} s)"
    else
        [ $rc -eq 124 ] && echo "(stopped at its cap of ${cap} s)" >>"$log"
        say "## $name: FAILED (exit $rc after ${seconds} s; cap ${cap} s; see $name.log)"
        FAILED+=("$name")
        tail -n 5 "$log" | sed 's/^/    | /' | tee -a "$SUMMARY"
    fi
    grep -E "$pattern" "$log" | sed 's/^/    /' | tee -a "$SUMMARY"
    return 0
}

# ----------------------------------------------------------------------------- the machine
say "# edalle device check, $(date -u '+%Y-%m-%d %H:%M UTC'): --device $DEVICE --preset $PRESET"
say "commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
if command -v nvidia-smi >/dev/null 2>&1; then
    say "card: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -n 1)"
fi
say "cpu: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //') × $(nproc 2>/dev/null)"
say "cpu flags (avx, amx, bf16, fma): $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | tr ' ' '\n' | grep -E '^(avx|amx|fma)|bf16' | sort -u | tr '\n' ' ')"
say "load: $(uptime | sed 's/.*load average/load average/')"
"$PY" - 2>&1 <<'EOF' | tee -a "$SUMMARY"
import importlib
import platform

print(f'python {platform.python_version()}')
for name in ('torch', 'jax', 'flax', 'open_clip', 'kornia', 'spandrel', 'min_dalle', 'discord', 'aiosqlite', 'ftfy'):
    try:
        module = importlib.import_module(name)
        print(f'  {name} {getattr(module, "__version__", "?")}')
    except Exception as exc:  # a missing package is reported; the steps that need it fail later
        print(f'  {name} MISSING ({type(exc).__name__}: {exc}); carry its wheel (see the header)')
try:
    import torch

    print(f'torch cuda: {torch.cuda.is_available()}' + (f', {torch.cuda.get_device_name()}' if torch.cuda.is_available() else ''))
    import jax

    print(f'jax devices: {jax.devices()}')
except Exception as exc:
    print(f'devices: {type(exc).__name__}: {exc}')
EOF

# ----------------------------------------------------------------------------- (a) the tests marked gpu
# only the files that hold such tests are collected: the others would import what the check does not need
mapfile -t GPU_TESTS < <(grep -lE 'pytest\.mark\.gpu' tests/test_*.py)
run_step tests_gpu "$CAP_TESTS" '(passed|failed|skipped|error|no tests ran)' \
    "$PY" -m pytest -m gpu -q -p no:cacheprovider -rs "${GPU_TESTS[@]}"

# ----------------------------------------------------------------------------- (b) generation against min-dalle
FIGURES='^ +[0-9]+ +[0-9.]+ |edalle / min-dalle|vs min-dalle|3x3 grid|peak memory|peak RSS|ranking \(|RSS by stage|^# generation'
run_step generation_mini "$CAP_MINI" "$FIGURES" "${BENCH_ENV[@]}" "$PY" bench/generation.py --model "$MINI" "${GEN_ARGS[@]}"
run_step generation_mega "$CAP_MEGA" "$FIGURES" "${BENCH_ENV[@]}" "$PY" bench/generation.py --model "$MEGA" "${GEN_ARGS[@]}"

# ----------------------------------------------------------------------------- (c) whole runs of the operations
run_step operations "$CAP_OPS" '^(expand 16:9|zoom 2x|dream 1:1|upscale x4): ' \
    "${BENCH_ENV[@]}" "$PY" bench/gpu_ops.py "${OPS_ARGS[@]}" --json "$OUT/operations.json"

# ----------------------------------------------------------------------------- verdict
if [ ${#FAILED[@]} -gt 0 ]; then
    say "RESULT: FAILED steps: ${FAILED[*]}"
    exit 1
fi
say "RESULT: every step ok; figures in $OUT"
exit 0
