#!/usr/bin/env bash
# The GPU check: `score bench` on reference workloads (1) demo, (3) encoder, (4) text_embedding, each job
# file of each (ONNX Runtime and torch), at the precisions given, written to ONE JSON file.
#
# Modes (run from anywhere; it works in the repository root):
#   bash benchmarks/gpu_check.sh --cpu [--rows N] [--out FILE]      this machine: .venv, no GPU, no installs;
#        300 rows by default and a 1-layer encoder (CPU_ENCODER_LAYERS): a check of the script, not a benchmark
#   bash benchmarks/gpu_check.sh --prepare-wheels [DIR]             here, with network to the package index:
#        the Python 3.12 wheels an offline GPU host lacks, big ones split into parts, packed in batches of at
#        most 58 MB (DIR/batch-NN, default .whl, git-ignored) so that each batch fits one device call
#   bash benchmarks/gpu_check.sh --stage DIR [--wheels STAGE]       on the GPU host, once per batch: copies
#        DIR's wheels and parts into STAGE (default /tmp/score-wheels), which outlives the call
#   bash benchmarks/gpu_check.sh --gpu [--wheels STAGE] [--rows N] [--out FILE]
#        on the GPU host: joins split wheels, installs them with pip --target (no index, no network), puts
#        this checkout on PYTHONPATH (the project runs from source), checks that onnxruntime has the CUDA
#        provider and torch sees the GPU, then benches with scoring.gpus_per_actor=1.
# Options: --workloads "demo encoder:200000 mlp text_embedding" (NAME[:ROWS], ROWS overriding --rows for that
#   workload)  --repeat R  --timeout S (per bench)
# Environment: PRECISIONS_ONNX (gpu: "fp32 fp16", cpu: "fp32"), PRECISIONS_TORCH (gpu: "fp32 bf16", cpu: "fp32");
#   on the GPU host an empty one skips that runtime's job files.
# Exit: 0 when every bench ran, 1 when some failed, 2 on bad usage or when `score bench` is missing
# (the JSON file is written in every case and says why).
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
mode="" rows="" out="" wheels_in="" stage=/tmp/score-wheels repeat=1 timeout_s=900
site=${SCORE_SITE:-/tmp/site}  # where --gpu installs the wheels (pip --target)
workloads="demo encoder text_embedding"
PART_MB=58

die() { echo "gpu_check: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu|--gpu) mode=${1#--} ;;
    --prepare-wheels) mode=prepare; [ $# -gt 1 ] && [ "${2#--}" = "$2" ] && { wheels_in=$2; shift; } ;;
    --stage) mode=stage; wheels_in=${2:?--stage needs the folder of carried wheels}; shift ;;
    --wheels) stage=${2:?--wheels needs a folder}; shift ;;
    --rows) rows=${2:?}; shift ;;
    --out) out=${2:?}; shift ;;
    --workloads) workloads=${2:?}; shift ;;
    --repeat) repeat=${2:?}; shift ;;
    --timeout) timeout_s=${2:?}; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
[ -n "$mode" ] || die "say where this runs: --cpu, --gpu, --prepare-wheels or --stage (see --help)"

# -- here: the wheels a GPU host lacks ---------------------------------------------------------------------------
if [ "$mode" = prepare ]; then
  dest=${wheels_in:-.whl}
  raw=$dest/all
  mkdir -p "$raw"
  plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
  # The project's runtime closure plus the GPU build of ONNX Runtime and the demo model's converter. The host's
  # image already holds torch (CUDA), numpy, pandas, pyarrow, onnx, tokenizers, scikit-learn: left out.
  python3 -m pip download -q "${plat[@]}" -d "$raw" "ray[data]==2.60.0" "great-expectations==1.24.1" \
    "mlflow==3.17.2" "deltalake==1.6.6" "duckdb>=1.3" "pydantic>=2.7" "pyyaml>=6" "filelock>=3.12" \
    "onnxruntime-gpu==1.31.1" "skl2onnx>=1.17" || die "pip download failed"
  # Left out: what the host's image already holds (its package list, read from the device library's KINDS.md
  # on 2026-11-17), and the CPU build of onnxruntime (never beside onnxruntime-gpu). Wheel names spell a
  # project's dashes and dots as underscores, then "-VERSION".
  host_has="absl_py aiofiles aiohappyeyeballs aiohttp aiosignal annotated_doc anyio attrs certifi charset_normalizer
    click cloudpickle colorama contourpy cycler filelock flatbuffers fonttools frozenlist fsspec grpcio h11 httpcore
    httpx idna jinja2 joblib kiwisolver markdown markdown_it_py markupsafe matplotlib mdurl msgpack multidict
    narwhals networkx numpy onnx onnxruntime packaging pandas pillow prometheus_client propcache protobuf psutil
    pyarrow pygments pyparsing python_dateutil pyyaml regex requests rich scikit_learn scipy setuptools six
    sympy threadpoolctl tokenizers torch tqdm triton typing_extensions urllib3 werkzeug wrapt yarl zipp"
  for w in "$raw"/*.whl; do
    name=$(basename "$w" | cut -d- -f1 | tr 'A-Z.-' 'a-z__')
    case " $(echo $host_has) " in *" $name "*) rm -f "$w" ;; esac
  done
  rm -f "$raw"/nvidia_*.whl
  for w in "$raw"/ray-*.whl; do  # as ../shared/device/prepare-wheels.sh: no Java jar, C++ API or JS maps
    zip -q -d "$w" 'ray/jars/*' 'ray/cpp/*' 'ray/dashboard/client/build/static/js/*.map' >/dev/null || true
  done
  # Split what is over PART_MB into NAME.whl.part-NN, then pack files into batches of at most PART_MB.
  pieces=$dest/pieces
  rm -rf "$pieces" "$dest"/batch-*; mkdir -p "$pieces"
  for w in "$raw"/*.whl; do
    if [ "$(stat -c %s "$w")" -gt $((PART_MB * 1000000)) ]; then
      split -b "${PART_MB}000000" -d "$w" "$pieces/$(basename "$w").part-"
    else
      cp "$w" "$pieces/"
    fi
  done
  batch=0 used=0
  for f in $(ls -S "$pieces"); do
    size=$(stat -c %s "$pieces/$f")
    if [ $((used + size)) -gt $((PART_MB * 1000000)) ] || [ "$batch" -eq 0 ]; then
      batch=$((batch + 1)) used=0
      mkdir -p "$(printf '%s/batch-%02d' "$dest" "$batch")"
    fi
    mv "$pieces/$f" "$(printf '%s/batch-%02d' "$dest" "$batch")/"
    used=$((used + size))
  done
  rmdir "$pieces"
  grep -qx "/${dest#./}/" .git/info/exclude 2>/dev/null || echo "/${dest#./}/" >> .git/info/exclude
  du -sh "$raw" "$dest"/batch-* >&2
  echo "gpu_check: $batch batches in $dest: carry each with one device call running" \
       "'bash benchmarks/gpu_check.sh --stage $dest/batch-NN', then run 'bash benchmarks/gpu_check.sh --gpu'" >&2
  exit 0
fi

# -- on the GPU host: keep one carried batch ----------------------------------------------------------------------
if [ "$mode" = stage ]; then
  [ -d "$wheels_in" ] || die "--stage $wheels_in: no such folder (name it in the device call's carry)"
  mkdir -p "$stage" && cp "$wheels_in"/* "$stage"/ || die "cannot copy $wheels_in into $stage"
  echo "gpu_check: $(ls "$stage" | wc -l) files staged in $stage" >&2
  exit 0
fi

# -- the check itself ---------------------------------------------------------------------------------------------
if [ "$mode" = gpu ]; then
  rows=${rows:-400000}
  precisions_onnx=${PRECISIONS_ONNX-fp32 fp16}
  precisions_torch=${PRECISIONS_TORCH-fp32 bf16}
  python=python3
  if [ -d "$stage" ] && ls "$stage" | grep -q .; then
    for first in "$stage"/*.whl.part-00; do  # join split wheels
      [ -e "$first" ] || continue
      cat "${first%.part-00}".part-* > "${first%.part-00}" && rm -f "${first%.part-00}".part-*
    done
    if [ ! -e "$site/.gpu_check-installed" ]; then  # once per host: later calls of the check reuse it
      $python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "$stage"/*.whl || die "installing the wheels in $stage failed"
      touch "$site/.gpu_check-installed"
    fi
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
    export PATH=$site/bin:$PATH
  else
    echo "gpu_check: no wheels in $stage: using what $python already has" >&2
  fi
  overrides=(--set scoring.gpus_per_actor=1)
else
  rows=${rows:-300}
  precisions_onnx=${PRECISIONS_ONNX:-fp32}
  precisions_torch=${PRECISIONS_TORCH:-fp32}
  python=python3
  [ -x .venv/bin/python ] && python=.venv/bin/python
  overrides=()
fi
export PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH}
# PYTHONFAULTHANDLER: a crash in native code (two segfaults on the H200 host) leaves its Python stack in the log
export RAY_DATA_DISABLE_PROGRESS_BARS=1 MLFLOW_DISABLE_TELEMETRY=true PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
out=${out:-${OUT:+$OUT/gpu_check.json}}
out=${out:-data/bench/gpu_check.json}
mkdir -p "$(dirname "$out")"
results=${out%.json}.runs.jsonl  # beside the report, one line per bench as it ends: kept if the call is cut short
: > "$results"

record() {  # workload job runtime precision exit_code report_file log_file note
  $python - "$@" >> "$results" <<'EOF'
import json, pathlib, sys
workload, job, runtime, precision, code, report, log, note = sys.argv[1:]
lines = [l for l in pathlib.Path(report).read_text().splitlines() if l.strip()] if report and pathlib.Path(report).exists() else []
try:
    parsed = json.loads(lines[-1]) if lines else None
except json.JSONDecodeError:
    parsed = None
tail = pathlib.Path(log).read_text(errors="replace")[-12000:] if log and pathlib.Path(log).exists() else ""
print(json.dumps({"workload": workload, "job": job, "runtime": runtime or None, "precision": precision or None,
                  "exit_code": int(code), "note": note or None, "report": parsed,
                  "log_tail": tail if int(code) else None}))
EOF
}

finish() {  # status message exit_code
  $python - "$results" "$out" "$mode" "$rows" "$1" "$2" <<'EOF'
import json, platform, subprocess, sys
results, out, mode, rows, status, message = sys.argv[1:]
host = {"python": platform.python_version(), "machine": platform.machine()}
try:
    import onnxruntime as ort
    host["onnxruntime"] = f"{ort.__version__} {ort.get_available_providers()}"
except Exception as exc:
    host["onnxruntime"] = f"not importable: {exc}"
try:
    import torch
    host["torch"] = torch.__version__
    host["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
except Exception as exc:
    host["torch"] = f"not importable: {exc}"
try:
    host["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                         "--format=csv,noheader"], capture_output=True, text=True,
                                        timeout=10).stdout.strip() or None
except OSError:
    host["nvidia_smi"] = None
runs = [json.loads(l) for l in open(results) if l.strip()]
json.dump({"mode": mode, "rows": int(rows), "status": status, "message": message or None, "host": host,
           "runs": runs}, open(out, "w"), indent=1)
print(f"gpu_check: {status}: {len(runs)} bench run(s) written to {out}" + (f" ({message})" if message else ""),
      file=sys.stderr)
EOF
  rm -rf "$work"
  exit "$3"
}

if [ "$mode" = gpu ]; then
  $python - <<'EOF' > "$work/device.log" 2>&1 || { cat "$work/device.log" >&2; finish no_gpu "$(tail -1 "$work/device.log")" 2; }
import onnxruntime as ort
if hasattr(ort, "preload_dlls"):
    ort.preload_dlls()
assert "CUDAExecutionProvider" in ort.get_available_providers(), \
    f"onnxruntime {ort.__version__} has no CUDA provider: install onnxruntime-gpu (make install ACCEL=gpu)"
import torch
assert torch.cuda.is_available(), f"torch {torch.__version__} cannot see a GPU"
print("gpu_check: device ok:", torch.cuda.get_device_name(0), "| onnxruntime", ort.__version__)
EOF
  cat "$work/device.log" >&2
fi

if ! $python -m jobs.cli bench --help > /dev/null 2>&1; then
  finish no_bench "'score bench' is not available in this checkout ($python -m jobs.cli bench --help failed): nothing was measured" 2
fi

failed=0
for item in $workloads; do
  workload=${item%%:*} n=$rows
  [ "$item" != "$workload" ] && n=${item#*:}
  module=benchmarks/workloads/$workload.py
  if [ ! -f "$module" ]; then
    record "$workload" "" "" "" 2 "" "" "$module is missing: workload not generated"; failed=1; continue
  fi
  dir=$work/$workload
  gen_extra=()  # on CPUs the check proves the script, not the encoder: one layer instead of 12
  [ "$mode" = cpu ] && [ "$workload" = encoder ] && gen_extra=(--layers "${CPU_ENCODER_LAYERS:-1}")
  echo "gpu_check: generating $workload ($n rows) in $dir ${gen_extra[*]}" >&2
  if ! timeout "$timeout_s" $python -m "benchmarks.workloads.$workload" --rows "$n" --out "$dir" "${gen_extra[@]}" \
       > "$work/$workload.gen.log" 2>&1; then
    record "$workload" "" "" "" 1 "" "$work/$workload.gen.log" "the workload generator failed"; failed=1; continue
  fi
  for job in "$dir"/job*.yaml; do
    [ -e "$job" ] || { record "$workload" "" "" "" 1 "" "" "the generator wrote no job*.yaml"; failed=1; continue; }
    runtime=$($python -c "import sys, yaml; m = yaml.safe_load(open(sys.argv[1]))['model']
print(m.get('runtime') or ('onnx' if str(m['uri']).endswith('.onnx') else 'torch'))" "$job") || runtime=onnx
    if [ "$runtime" = torch ]; then precisions=$precisions_torch; else precisions=$precisions_onnx; fi
    for precision in $precisions; do
      name=$(basename "$job" .yaml)-$precision
      echo "gpu_check: score bench $workload/$(basename "$job") ($runtime, $precision)" >&2
      timeout "$timeout_s" $python -m jobs.cli bench "$job" --rows "$n" --repeat "$repeat" --json \
        "${overrides[@]}" --set "scoring.precision=$precision" \
        > "$work/$workload-$name.json" 2> "$work/$workload-$name.log"
      code=$?
      [ "$code" -eq 0 ] || { failed=1; tail -5 "$work/$workload-$name.log" >&2; }
      record "$workload" "$(basename "$job")" "$runtime" "$precision" "$code" "$work/$workload-$name.json" \
        "$work/$workload-$name.log" "$([ "$code" -eq 124 ] && echo "stopped after --timeout $timeout_s s")"
    done
  done
done
if [ "$failed" -eq 0 ]; then finish ok "" 0; else finish failed "some runs failed: see runs[].log_tail" 1; fi
