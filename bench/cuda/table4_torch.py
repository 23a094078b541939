"""Table 4's reference point in PyTorch: one training step (forward, cross-entropy, backward; no optimizer, as
bench/cuda/paper.ts --only train) of the Transformer that paper.ts builds at 1.3B, written here in plain PyTorch
with torch.nn.functional.scaled_dot_product_attention (causal) as its attention: d 2048, 24 layers, 16 heads of 128,
bias-free q/k/v/out projections, rotary positions over interleaved pairs (theta 10000) on q and k, pre-RMSNorm
blocks (eps 1e-6), a GELU GLU feed-forward of width 5544, a final RMSNorm and an untied head over a vocabulary of
4096; sequence 8192, batch 1, the token ids paper.ts uses. Weights random (the timing and memory do not depend on
them). Runs float32 (TF32 off, as ours) and bfloat16 (weights and activations). Peak memory: the allocator's peak
over the step from a reset just before it, weights and their gradients included, as paper.ts reports its peak.
Writes one JSON object to argv[1]. Timing: CUDA-synchronised wall time per step, median of the repeats."""
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

D, L, H, FFN, VOCAB, T, B = 2048, 24, 16, 5544, 4096, 8192, 1
GIB = 2**30
out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "runs": []}


class RMSNorm(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


def rotate(x, cos, sin):
    # x: [B, T, H, K]; pairs (2i, 2i + 1) rotated by angle t · theta^(-2i/K).
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(D), RMSNorm(D)
        self.q, self.k, self.v, self.o = (torch.nn.Linear(D, D, bias=False) for _ in range(4))
        self.fc1, self.gate = torch.nn.Linear(D, FFN, bias=False), torch.nn.Linear(D, FFN, bias=False)
        self.fc2 = torch.nn.Linear(FFN, D, bias=False)

    def forward(self, x, cos, sin):
        h = self.norm1(x)
        q = rotate(self.q(h).view(B, T, H, D // H), cos, sin).transpose(1, 2)
        k = rotate(self.k(h).view(B, T, H, D // H), cos, sin).transpose(1, 2)
        v = self.v(h).view(B, T, H, D // H).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, D)
        x = x + self.o(a)
        h = self.norm2(x)
        return x + self.fc2(F.gelu(self.fc1(h)) * self.gate(h))


class Transformer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, D)
        self.blocks = torch.nn.ModuleList(Block() for _ in range(L))
        self.norm = RMSNorm(D)
        self.head = torch.nn.Linear(D, VOCAB, bias=False)

    def forward(self, ids, cos, sin):
        x = self.embed(ids)
        for blk in self.blocks:
            x = blk(x, cos, sin)
        return self.head(self.norm(x))


def run(dtype):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = Transformer().to(device="cuda", dtype=dtype)
    params = sum(p.numel() for p in model.parameters())
    ids = torch.tensor([(i * 7919) % VOCAB for i in range(B * T)], device="cuda").view(B, T)
    targets = (ids + 1) % VOCAB
    K = D // H
    inv = 10000.0 ** (-torch.arange(0, K, 2, device="cuda", dtype=torch.float32) / K)
    ang = torch.arange(T, device="cuda", dtype=torch.float32)[:, None] * inv[None, :]  # [T, K/2]
    cos, sin = (f(ang).to(dtype)[None, :, None, :] for f in (torch.cos, torch.sin))

    def step():
        logits = model(ids, cos, sin)
        F.cross_entropy(logits.view(-1, VOCAB).float(), targets.view(-1)).backward()
        model.zero_grad(set_to_none=False)

    step()  # warm-up: allocates the gradients, picks the kernels
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    ms = statistics.median(times)
    rec = {
        "figure": "table4",
        "model": "1.3B",
        "arch": "transformer",
        "variant": "pytorch-sdpa",
        "dtype": str(dtype).replace("torch.", ""),
        "parameters": params,
        "length": T,
        "batch": B,
        "ms_per_step": ms,
        "ms_per_step_min": min(times),
        "tokens_per_s": B * T * 1000 / ms,
        "peak_gib": torch.cuda.max_memory_allocated() / GIB,
        "samples": len(times),
    }
    out["runs"].append(rec)
    print(json.dumps(rec), flush=True)
    del model
    torch.cuda.empty_cache()


for dtype in [torch.float32, torch.bfloat16]:
    try:
        run(dtype)
    except Exception as e:  # noqa: BLE001 - reported in the results
        out["runs"].append({"variant": "pytorch-sdpa", "dtype": str(dtype), "status": "failed", "error": str(e)})
        print(f"{dtype}: {e}", flush=True)
with open(sys.argv[1], "w") as f:
    json.dump(out, f, indent=1)
