#!/usr/bin/env bash
# Runs on the device machine (the device tool's `run`, from the root of the checkout, with .cuda-carry carried; see
# carry.sh): unpacks Node and the tree, finds cuBLAS in PyTorch's nvidia packages, then runs the stages named:
#   build     tsc and the CUDA addon built here from carry-source.sh's sources (over the tree's compiled ones)
#   info      nvidia-smi, the addon's view of the GPU
#   test      test/cuda.test.ts (the op suite and the sequence kernels against the reference backend)
#   vectors   the torchscale and fla vectors through models on the cuda device (their tests' cuda suites)
#   cli       train a tiny model, then generate, eval (and on the reference device) and serve two requests at once from it,
#             with --device cuda
#   suites    the decode, batch and train bench suites (--quick; SUITE_FULL=1: full settings) on the cuda device
#   paper     bench/cuda/paper.js: Figure 6 at 6.7B and Table 4 at 1.3B (PAPER_ARGS: e.g. "--only decode"; PAPER_OUT:
#             the name of its JSON and log, default cuda-paper)
#   profile   ncu over one 6.7B decode step at batch 1 of each architecture (paper.js --only profile; PROFILE_ARGS:
#             e.g. "--profile-batch 8"): kernel times
#   sanitize  test/cuda.test.ts under compute-sanitizer (SANITIZE_TOOLS, default memcheck)
#   hostprof  node --cpu-prof over paper.js --only profile: the host's time in the decode steps by function
#   bench     bench/cuda/kernels.ts (quick: bench-quick; BENCH_ARGS: e.g. "--only sequence")
#   tcprof    ncu over kernels.ts --only sequence: the tensor-core retention kernels' times (tcprof.txt; TC_SHAPE:
#             which of its shapes, default 0)
#   peer      bench/cuda/peer.py (fla chunk_retention, PyTorch SDPA, the ceilings)
#   table4    bench/cuda/table4_torch.py (Table 4's PyTorch reference point: the 1.3B Transformer's training step
#             with SDPA, float32 and bf16)
#   curve     bench/cuda/train-curve.ts (the first training steps on the reference and cuda devices)
# Logs and JSON go to /tmp/rn/out, packed at the end into $OUT/out.tgz (the device tool brings back 8 files at most).
set -uo pipefail
carry=$(pwd)/.cuda-carry
out=/tmp/rn/out
mkdir -p "$out" /tmp/rn
# Packed on any exit, also when a stage runs past the call's time.
trap '[ -n "${OUT:-}" ] && tar czf "$OUT/out.tgz" -C /tmp/rn out' EXIT
cd /tmp/rn
[ -x node ] || { xz -dc "$carry/node.xz" >node && chmod +x node; }
# RN_KEEP_TREE=1: keep the tree of an earlier invocation (one that ran `build`).
[ -n "${RN_KEEP_TREE:-}" ] && [ -d tree ] || { rm -rf tree && tar xJf "$carry/tree.tar.xz"; }
[ -f "$carry/shared.tar.xz" ] && tar xJf "$carry/shared.tar.xz"
[ -f "$carry/fla.tar.xz" ] && { rm -rf fla && mkdir fla && tar xJf "$carry/fla.tar.xz" -C fla; }
cublas=$(python3 - <<'PY'
import glob, os, torch
base = os.path.join(os.path.dirname(torch.__file__), "..")
hits = glob.glob(os.path.join(base, "nvidia", "**", "libcublas.so.13"), recursive=True)
print(os.path.dirname(os.path.realpath(hits[0])) if hits else "")
PY
)
export LD_LIBRARY_PATH="$cublas${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
node=/tmp/rn/node
cd tree
for stage in "$@"; do
  echo "=== $stage ($(date -u +%T))"
  case $stage in
    build)
      # The sources of carry-source.sh over the tree: tsc, then the CUDA addon with this machine's nvcc and cuBLAS.
      tar xzf "$carry/source.tar.gz" -C /tmp/rn
      $node node_modules/typescript/bin/tsc -p tsconfig.json >"$out/build.log" 2>&1
      echo "tsc exit $? (type errors from modules not carried do not stop its output)"
      rm -rf build/cuda-obj
      CUBLAS_HOME=${cublas%/lib} RETNET_NODE_INCLUDE=$(pwd)/.node-include RETNET_CUDA_JOBS=16 $node scripts/cuda/build.mjs \
        2>&1 | tee -a "$out/build.log" | tail -3
      ;;
    info)
      nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$out/info.txt"
      $node -e "const a=require('./build/Release/retnet_cuda.node');console.log(a.available()??JSON.stringify(a.info()))" | tee -a "$out/info.txt"
      echo "cublas: $cublas" | tee -a "$out/info.txt"
      ;;
    test) $node --test --test-reporter=spec dist/test/cuda.test.js 2>&1 | tee "$out/test.log" | tail -40 ;;
    vectors)
      $node --test --test-reporter=spec --test-name-pattern="cuda backend" dist/test/torchscale.test.js \
        dist/test/fla.test.js 2>&1 | tee "$out/vectors.log" | grep -vE "^ +(﹣|-) .*# SKIP" | tail -40
      ;;
    cli)
      head -c 200000 shared/fla-vectors/README.md shared/torchscale-vectors/*.json >/tmp/rn/data.txt
      { $node dist/src/cli/run.js train --data /tmp/rn/data.txt --preset tiny --steps 20 --out /tmp/rn/run --device cuda &&
        $node dist/src/cli/run.js generate --model /tmp/rn/run --prompt "The state" --max-tokens 32 --device cuda &&
        for d in cuda reference; do $node dist/src/cli/run.js eval --model /tmp/rn/run --data /tmp/rn/data.txt --device $d | tail -1; done; } \
        2>&1 | tee "$out/cli.log" | tail -12
      # serve on the device: two completions at once (one batch, decode steps through the step graph), greedy, then the
      # same prompts through generate on the reference device for comparison (the tree carries no cpu addon).
      $node dist/src/cli/run.js serve --model /tmp/rn/run --port 8123 --device cuda >/tmp/rn/serve.log 2>&1 &
      srv=$!
      for _ in $(seq 50); do grep -q listening /tmp/rn/serve.log && break; sleep 0.2; done
      $node -e '
        const ask = (prompt) => fetch("http://127.0.0.1:8123/v1/completions", { method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ prompt, max_tokens: 24, temperature: 0 }) }).then((r) => r.json());
        Promise.all([ask("The state"), ask("A decode step")]).then((rs) =>
          rs.forEach((r) => console.log("serve:", JSON.stringify(r.choices?.[0]?.text ?? r))));' 2>&1 | tee -a "$out/cli.log"
      kill $srv
      for p in "The state" "A decode step"; do
        $node dist/src/cli/run.js generate --model /tmp/rn/run --prompt "$p" --max-tokens 24 --temperature 0 --device reference 2>/dev/null |
          $node -e 'let s="";process.stdin.on("data",(d)=>s+=d).on("end",()=>console.log("reference generate:", JSON.stringify(s)))'
      done 2>&1 | tee -a "$out/cli.log"
      ;;
    suites)
      for s in decode batch train; do
        timeout ${SUITE_TIMEOUT:-170} $node dist/src/cli/run.js bench $s $([ -n "${SUITE_FULL:-}" ] || echo --quick) --device cuda --out /tmp/rn/suites \
          >"$out/suite-$s.log" 2>&1
        echo "bench $s: exit $?"; tail -c 2500 "$out/suite-$s.log"
        cp /tmp/rn/suites/bench/results/$s*.json "$out/" 2>/dev/null
      done
      ;;
    sanitize)
      # SANITIZE_TOOLS: compute-sanitizer tools to run in turn (memcheck, racecheck, synccheck, initcheck).
      for tool in ${SANITIZE_TOOLS:-memcheck}; do
        timeout ${SANITIZE_TIMEOUT:-300} compute-sanitizer --tool $tool --print-limit 20 $node dist/test/cuda.test.js >"$out/sanitize-$tool.log" 2>&1
        echo "compute-sanitizer $tool exit $?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|^# (tests|pass|fail)" "$out/sanitize-$tool.log" | tail -6
      done
      ;;
    hostprof)
      # The host's time inside the 6.7B decode steps of paper.js --only profile, by function (node --cpu-prof).
      rm -rf /tmp/rn/prof
      $node --cpu-prof --cpu-prof-dir=/tmp/rn/prof --cpu-prof-interval 100 dist/bench/cuda/paper.js --only profile >"$out/hostprof.log" 2>&1
      echo "hostprof exit $?"
      $node scripts/cuda/cpuprof-top.mjs /tmp/rn/prof/*.cpuprofile stepInPlace 45 | tee "$out/hostprof.txt"
      ;;
    paper) $node dist/bench/cuda/paper.js ${PAPER_ARGS:-} --out "$out/${PAPER_OUT:-cuda-paper}.json" 2>&1 | tee "$out/${PAPER_OUT:-cuda-paper}.log" | cut -c1-400 ;;
    profile)
      timeout ${PROFILE_TIMEOUT:-240} ncu --profile-from-start off --clock-control none --metrics gpu__time_duration.sum --csv \
        $node dist/bench/cuda/paper.js --only profile ${PROFILE_ARGS:-} >"$out/profile.csv" 2>"$out/profile.log"
      echo "ncu exit $?"; tail -3 "$out/profile.log"
      python3 scripts/cuda/kernel-times.py "$out/profile.csv" | tee "$out/profile.txt"
      ;;
    bench) $node dist/bench/cuda/kernels.js ${BENCH_ARGS:-} --out "$out/cuda-kernels.json" 2>&1 | tee "$out/bench.log" ;;
    tcprof)
      timeout ${PROFILE_TIMEOUT:-240} ncu --clock-control none --metrics gpu__time_duration.sum --csv -k regex:tc \
        $node dist/bench/cuda/kernels.js --only sequence --tc ${TC_SHAPE:-0} >"$out/tcprof.csv" 2>"$out/tcprof.log"
      echo "ncu exit $?"; tail -3 "$out/tcprof.log"
      python3 scripts/cuda/kernel-times.py "$out/tcprof.csv" | tee "$out/tcprof.txt"
      ;;
    bench-quick) $node dist/bench/cuda/kernels.js --quick --out "$out/cuda-kernels-quick.json" 2>&1 | tee "$out/bench.log" ;;
    table4) PYTHONUNBUFFERED=1 python3 bench/cuda/table4_torch.py "$out/cuda-table4-torch.json" 2>&1 | tee "$out/table4.log" | tail -5 ;;
    peer) PYTHONUNBUFFERED=1 FLA_PATH=/tmp/rn/fla python3 bench/cuda/peer.py "$out/cuda-peer.json" 2>&1 | tee "$out/peer.log" | tail -30 ;;
    curve) $node dist/bench/cuda/train-curve.js --devices reference,cuda --steps 20 --out "$out/cuda-train-curve.json" 2>&1 | tee "$out/curve.log" | cut -c1-600 ;;
    *) echo "unknown stage $stage" ;;
  esac
done
