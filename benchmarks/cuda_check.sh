#!/usr/bin/env bash
# The CUDA checks, in one pass on a GPU machine (CI has none): nerfacc's extension, the CUDA tests,
# hash-encoding speed on the GPU, VSD's seconds per step and peak memory at 512 px (benchmarks/vsd_memory.py)
# and the text-to-3D benchmark prompts on the GPU.
#
#   bash benchmarks/cuda_check.sh OUTDIR
#
# Where the project's packages are missing (a bare machine with torch), wheels in .whl/ are
# installed to /tmp/site first. The txt2mesh runs write GIF turntables rendered from the field
# (no open3d or ffmpeg needed there) and are not scored here: copy OUTDIR/t23d.txz back, unpack it and run
#   python benchmarks/text_to_3d.py --score-only --out OUTDIR/t23d
# Each stage has a time limit and all of them share BUDGET seconds (default 500), so the pass ends
# in time to pack its results.
set -u
out=${1:?usage: bash benchmarks/cuda_check.sh OUTDIR}
deadline=$(( $(date +%s) + ${BUDGET:-500} ))
limit() { local left=$(( deadline - $(date +%s) )); echo $(( left < $1 ? (left > 1 ? left : 1) : $1 )); }
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1
if ! python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    echo "cuda_check.sh: torch sees no CUDA GPU here; run it on a GPU machine with a CUDA build of torch"
    exit 2
fi
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MAX_JOBS=${MAX_JOBS:-16}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")}
stage() { echo; echo "== $1 ($(date +%T))"; }

stage "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| diffusers', diffusers.__version__, '| transformers', transformers.__version__)"

stage "nerfacc CUDA extension (JIT build on first import)"
t0=$(date +%s)
timeout $(limit 200) python3 -c "from dream3d.renderers.compositing import nerfacc_available as a; print('nerfacc CUDA extension loads:', a())" 2>&1 | tail -5
echo "nerfacc build + import: $(( $(date +%s) - t0 )) s"

stage "CUDA tests"
timeout $(limit 120) python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py tests/test_volume_render.py tests/test_hashgrid.py tests/test_rasterize.py 2>&1 | tail -15

stage "hash encoding on the GPU"
timeout $(limit 60) python3 benchmarks/hashgrid.py --device cuda --points 262144 --repeats 7 > "$out/hashgrid.txt" 2>&1 \
    && cp benchmarks/results/hashgrid.json "$out/"
tail -n 8 "$out/hashgrid.txt"

stage "VSD, the GPU recipe (configs/prolificdreamer-sd.yaml) on SD 2.1 base's architecture, random weights"
timeout $(limit 150) python3 benchmarks/vsd_memory.py --steps 6 > "$out/vsd_memory.txt" 2>&1 \
    && cp benchmarks/results/vsd_memory.json "$out/"
tail -n 10 "$out/vsd_memory.txt"

stage "txt2mesh alone: a red sphere (default backends, default dtype)"
gif=(export.turntable_source=field "export.turntable_formats=[gif]")
timeout $(limit 120) python3 benchmarks/text_to_3d.py --no-score --out "$out/t23d" --prompts "a red sphere" "${gif[@]}" 2>&1 | tail -3

stage "txt2mesh: the other nine prompts at once, beside the red sphere in fp32 and with our sampler"
t=$(limit 240)
OMP_NUM_THREADS=1 timeout $t python3 benchmarks/text_to_3d.py --no-score --out "$out/t23d-fp32" --prompts "a red sphere" \
    "${gif[@]}" dtype=fp32 > "$out/fp32.txt" 2>&1 &
fp32_pid=$!
OMP_NUM_THREADS=1 timeout $t python3 benchmarks/text_to_3d.py --no-score --out "$out/t23d-torch" --prompts "a red sphere" \
    "${gif[@]}" renderer.backend=torch > "$out/torch.txt" 2>&1 &
torch_pid=$!
timeout $t python3 benchmarks/text_to_3d.py --no-score --out "$out/t23d" --jobs 9 --prompts "a blue cube" "a green cone" \
    "a yellow cylinder" "a purple torus" "a orange sphere" "a red cone" "a green cube" "a blue cylinder" \
    "a yellow torus" "${gif[@]}" 2>&1 | tail -12
wait "$fp32_pid" "$torch_pid"  # not a bare wait: that also waits for the log's tee, which never ends
tail -n 3 "$out/fp32.txt" "$out/torch.txt"
(cd "$out" && find t23d* -name checkpoints -prune -o -type f ! -name "*.glb" ! -name "*.obj" -print | tar cJf t23d.txz -T - && rm -rf t23d t23d-fp32 t23d-torch)
stage "done"
