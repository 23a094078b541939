#!/usr/bin/env python3
"""The peer benchmark's PyTorch side: the same RetNet shapes as `retnet bench peer`, written directly in PyTorch on the
CPU (torchscale's math: RMSNorm, rotated q/k, decay mask with sqrt(S(n)) row normalisation and the |.|-sum score
normaliser, per-head RMSNorm, swish gate, GLU FFN). Measures a training step (parallel form, forward + backward +
AdamW) and recurrent decoding, and prints one JSON object. Run by bench/peer.ts (`retnet bench peer`); needs Debian's
python3-torch."""

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F


def rotary_tables(positions, head_dim):
    half = head_dim // 2
    base = 1.0 / (10000 ** torch.linspace(0, 1, half))
    angle = base.repeat_interleave(2)
    pos = positions.float().unsqueeze(-1) * angle
    return torch.cos(pos), torch.sin(pos)


def rotate(x, cos, sin):
    # (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin) on interleaved pairs
    pairs = torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)
    return x * cos + pairs * sin


class RetNet(torch.nn.Module):
    def __init__(self, vocab, d, dv, heads, ffn, layers, eps=1e-6):
        super().__init__()
        self.h, self.k, self.v, self.eps = heads, d // heads, dv // heads, eps
        self.embed = torch.nn.Embedding(vocab, d)
        self.blocks = torch.nn.ModuleList()
        for _ in range(layers):
            b = torch.nn.Module()
            b.q, b.kp, b.vp, b.g = (torch.nn.Linear(d, n, bias=False) for n in (d, d, dv, dv))
            b.o = torch.nn.Linear(dv, d, bias=False)
            b.n1, b.n2 = torch.nn.Parameter(torch.ones(d)), torch.nn.Parameter(torch.ones(d))
            b.fc1, b.gate = torch.nn.Linear(d, ffn, bias=False), torch.nn.Linear(d, ffn, bias=False)
            b.fc2 = torch.nn.Linear(ffn, d, bias=False)
            self.blocks.append(b)
        self.norm = torch.nn.Parameter(torch.ones(d))
        self.head = torch.nn.Linear(d, vocab, bias=False)
        self.gammas = 1 - 2.0 ** (-5 - torch.arange(heads, dtype=torch.float))

    def rms(self, x, w=None):
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return y if w is None else y * w

    def ffn(self, b, x):
        return b.fc2(F.gelu(b.fc1(x)) * b.gate(x))

    def forward(self, ids):
        B, T = ids.shape
        cos, sin = rotary_tables(torch.arange(T), self.k)
        n = torch.arange(T)
        exponent = (n[:, None] - n[None, :]).float()
        lg = torch.log(self.gammas)[:, None, None]
        mask = torch.where(exponent >= 0, torch.exp(exponent * lg), torch.zeros(()))  # [H, T, T]
        mask = mask / mask.sum(-1, keepdim=True).sqrt()
        x = self.embed(ids)
        for b in self.blocks:
            h = self.rms(x, b.n1)
            q = rotate(b.q(h).view(B, T, self.h, self.k), cos[:, None], sin[:, None]).transpose(1, 2)
            k = rotate((b.kp(h) * self.k**-0.5).view(B, T, self.h, self.k), cos[:, None], sin[:, None]).transpose(1, 2)
            v = b.vp(h).view(B, T, self.h, self.v).transpose(1, 2)
            a = (q @ k.transpose(-1, -2)) * mask
            a = a / a.detach().abs().sum(-1, keepdim=True).clamp(1, 5e4)
            o = self.rms((a @ v).transpose(1, 2)).reshape(B, T, -1)
            x = x + b.o(F.silu(b.g(h)) * o)
            x = x + self.ffn(b, self.rms(x, b.n2))
        return self.head(self.rms(x, self.norm))

    @torch.no_grad()
    def step(self, tokens, pos, states, scales):
        B = tokens.shape[0]
        x = self.embed(tokens)  # [B, D]
        cos, sin = (t.to(x.dtype) for t in rotary_tables(torch.tensor([pos]), self.k))
        gammas = self.gammas.to(x.dtype)
        for i, b in enumerate(self.blocks):
            h = self.rms(x, b.n1)
            q = rotate(b.q(h).view(B, self.h, self.k), cos, sin)
            k = rotate((b.kp(h) * self.k**-0.5).view(B, self.h, self.k), cos, sin)
            v = b.vp(h).view(B, self.h, self.v)
            prev = scales[i]
            scales[i] = prev * gammas + 1
            decay = (prev.sqrt() * gammas / scales[i].sqrt())[None, :, None, None]
            states[i] = states[i] * decay + (k.unsqueeze(-1) * v.unsqueeze(-2)) / scales[i].sqrt()[None, :, None, None]
            o = self.rms(torch.einsum("bhk,bhkv->bhv", q, states[i])).reshape(B, -1)
            x = x + b.o(F.silu(b.g(h)) * o)
            x = x + self.ffn(b, self.rms(x, b.n2))
        return self.head(self.rms(x, self.norm))


def main():
    p = argparse.ArgumentParser()
    for name in ("vocab", "d", "dv", "heads", "ffn", "layers", "seq", "batch", "steps", "decode", "threads"):
        p.add_argument(f"--{name}", type=int, required=True)
    # bench/lowp.ts: decoding only (--steps 0), in float32 or bfloat16, with --decode-batch rows per step
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--decode-batch", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, a.dtype)
    model = RetNet(a.vocab, a.d, a.dv, a.heads, a.ffn, a.layers).to(dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq))
    targets = torch.randint(0, a.vocab, (a.batch, a.seq))

    def train_step():
        opt.zero_grad()
        loss = F.cross_entropy(model(ids).reshape(-1, a.vocab), targets.reshape(-1))
        loss.backward()
        opt.step()

    train_s = None
    if a.steps > 0:
        train_step()  # warm-up
        t0 = time.perf_counter()
        for _ in range(a.steps):
            train_step()
        train_s = (time.perf_counter() - t0) / a.steps

    B = a.decode_batch
    states = [torch.zeros(B, a.heads, a.d // a.heads, a.dv // a.heads, dtype=dtype) for _ in range(a.layers)]
    scales = [torch.zeros(a.heads, dtype=dtype) for _ in range(a.layers)]
    token = torch.ones(B, dtype=torch.long)
    for pos in range(8):  # warm-up
        model.step(token, pos, states, scales)
    t0 = time.perf_counter()
    for pos in range(8, 8 + a.decode):
        token = model.step(token, pos, states, scales).argmax(-1)
    decode_s = (time.perf_counter() - t0) / a.decode

    print(json.dumps({
        "torch_version": torch.__version__,
        "threads": a.threads,
        "dtype": a.dtype,
        "decode_batch": B,
        "train_step_s": train_s,
        "train_tokens_per_s": a.batch * a.seq / train_s if train_s else None,
        "decode_ms_per_token": decode_s * 1e3,
        "decode_tokens_per_s": B / decode_s,
    }))


if __name__ == "__main__":
    main()
