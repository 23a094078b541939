"""Peer timings on the GPU for bench/cuda: fla's chunk_retention and PyTorch's SDPA (causal), forward + backward,
plus the two ceilings (bf16 GEMM, device copy). fla is not installed on the device machine: its source is carried
there for the run (FLA_PATH) and never committed. Writes one JSON object to the path given as argv[1].
Timing: CUDA events around each call, warm-up first, median of the repeats (triton.testing.do_bench)."""
import json
import os
import sys
import time

import torch
import triton

sys.path.insert(0, os.environ.get("FLA_PATH", ""))

out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__, "runs": []}


def bench(fn):
    return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")


def record(**kw):
    out["runs"].append(kw)
    print(json.dumps(kw), flush=True)


# Ceilings: an 8192^3 bf16 GEMM on random data; a 2 GiB device-to-device copy (bytes read + written).
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
ms = bench(lambda: a @ b)
record(what="gemm_bf16", n=8192, ms_median=ms, tflops=2 * 8192**3 / ms / 1e9)
a32 = a.float()
b32 = b.float()
torch.backends.cuda.matmul.allow_tf32 = False
ms = bench(lambda: a32 @ b32)
record(what="gemm_fp32", n=8192, ms_median=ms, tflops=2 * 8192**3 / ms / 1e9)
del a, b, a32, b32
x = torch.empty(2**29, device="cuda", dtype=torch.float32)
y = torch.empty_like(x)
ms = bench(lambda: y.copy_(x))
record(what="copy", bytes=2 * x.numel() * 4, ms_median=ms, gb_per_s=2 * x.numel() * 4 / ms / 1e6)
del x, y

try:
    from fla.ops.retention import chunk_retention

    fla_error = None
except Exception as e:  # noqa: BLE001 - reported in the results
    chunk_retention = None
    fla_error = f"{type(e).__name__}: {e}"
out["fla_error"] = fla_error

# bf16 first at both shapes: fla's Triton kernels compile and autotune on first use (minutes), so a call that runs
# out of time still has the figures the goals are judged on.
for dtype in [torch.bfloat16, torch.float32]:
    for B, H, T, D in [(2, 16, 8192, 128), (1, 16, 16384, 128)]:
        name = str(dtype).replace("torch.", "")
        q = torch.randn(B, T, H, D, device="cuda", dtype=dtype, requires_grad=True)
        k = torch.randn(B, T, H, D, device="cuda", dtype=dtype, requires_grad=True)
        v = torch.randn(B, T, H, D, device="cuda", dtype=dtype, requires_grad=True)
        do = torch.randn(B, T, H, D, device="cuda", dtype=dtype)
        if chunk_retention is not None:

            def fla_fwd_bwd():
                o, _ = chunk_retention(q, k, v)
                o.backward(do)

            try:
                record(what="fla_chunk_retention_fwd_bwd", dtype=name, B=B, H=H, T=T, D=D, ms_median=bench(fla_fwd_bwd))
                record(what="fla_chunk_retention_fwd", dtype=name, B=B, H=H, T=T, D=D,
                       ms_median=bench(lambda: chunk_retention(q, k, v)))
            except Exception as e:  # noqa: BLE001
                record(what="fla_chunk_retention_fwd_bwd", dtype=name, B=B, H=H, T=T, D=D, error=str(e)[:300])
        qh, kh, vh = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))
        doh = do.transpose(1, 2).contiguous()

        def sdpa_fwd_bwd():
            o = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, is_causal=True)
            o.backward(doh)

        record(what="sdpa_causal_fwd_bwd", dtype=name, B=B, H=H, T=T, D=D, ms_median=bench(sdpa_fwd_bwd))
        del q, k, v, do, qh, kh, vh, doh
        torch.cuda.empty_cache()

with open(sys.argv[1], "w") as f:
    json.dump(out, f, indent=1)
