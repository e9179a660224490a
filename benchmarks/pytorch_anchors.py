"""PyTorch side of the CPU anchors, measured on the same machine as ``benchmarks/encoders.py``.

    # torch is NOT a project dependency; use a separate venv (the 2.13.0 CPU wheel, no CUDA):
    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchenv/bin/python benchmarks/pytorch_anchors.py --threads 2 --repeats 10

Models (written here from the published architectures, same sizes as the JAX anchors):

* CGCNN (Xie & Grossman 2018; ``txie-46/cgcnn`` ``model.py`` structure): 92-d atom features ->
  Linear(64); 3 x ConvLayer (``fc_full`` Linear(2*64 + 41, 128) on ``[v_i, v_j, u_ij]`` in the
  dense [N, M] neighbour layout, BatchNorm1d(128), sigmoid * softplus, sum over the M = 12
  neighbours, BatchNorm1d(64), softplus(v + s)); mean pool per crystal; softplus;
  Linear(64, 128); softplus; Linear(128, 1). Pooling as in the reference (a Python list of
  per-crystal index tensors) and, with ``--vectorised-pool``, with one ``index_add_``.
  SGD(lr 0.01, momentum 0.9) on MSE, batch 256 crystals of 5 atoms.
* CrabNet encoder (Wang et al. 2021): element table (200-d) -> Linear(512) scaled by
  2**emb_scaler, fractional sinusoidal encodings (linear + log, resolution 5000) added,
  3 x ``nn.TransformerEncoderLayer(512, 4, 2048, dropout=0, post-LN, ReLU)`` with a key
  padding mask, masked mean over the 5 elements. AdamW on MSE of the embedding mean
  (the same loss as the JAX anchor). Batch 256.

Throughput = samples / median step time over ``--repeats`` steps after 2 warm-up steps.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch
from torch import nn


class ConvLayer(nn.Module):
    def __init__(self, atom_fea_len: int, nbr_fea_len: int):
        super().__init__()
        self.fc_full = nn.Linear(2 * atom_fea_len + nbr_fea_len, 2 * atom_fea_len)
        self.bn1 = nn.BatchNorm1d(2 * atom_fea_len)
        self.bn2 = nn.BatchNorm1d(atom_fea_len)

    def forward(self, atom_in_fea, nbr_fea, nbr_fea_idx):
        n, m = nbr_fea_idx.shape
        atom_nbr_fea = atom_in_fea[nbr_fea_idx, :]
        total = torch.cat([atom_in_fea.unsqueeze(1).expand(n, m, -1), atom_nbr_fea, nbr_fea], dim=2)
        gated = self.fc_full(total)
        gated = self.bn1(gated.view(-1, gated.shape[-1])).view(n, m, -1)
        nbr_filter, nbr_core = gated.chunk(2, dim=2)
        summed = torch.sum(torch.sigmoid(nbr_filter) * nn.functional.softplus(nbr_core), dim=1)
        return nn.functional.softplus(atom_in_fea + self.bn2(summed))


class CGCNN(nn.Module):
    def __init__(self, orig_atom_fea_len=92, nbr_fea_len=41, atom_fea_len=64, n_conv=3, h_fea_len=128,
                 vectorised_pool=False):
        super().__init__()
        self.embedding = nn.Linear(orig_atom_fea_len, atom_fea_len)
        self.convs = nn.ModuleList([ConvLayer(atom_fea_len, nbr_fea_len) for _ in range(n_conv)])
        self.conv_to_fc = nn.Linear(atom_fea_len, h_fea_len)
        self.fc_out = nn.Linear(h_fea_len, 1)
        self.vectorised_pool = vectorised_pool

    def pool(self, atom_fea, crystal_atom_idx, crystal_of_atom, n_crystals):
        if self.vectorised_pool:
            total = torch.zeros(n_crystals, atom_fea.shape[1]).index_add_(0, crystal_of_atom, atom_fea)
            count = torch.bincount(crystal_of_atom, minlength=n_crystals).clamp(min=1).unsqueeze(1)
            return total / count
        return torch.cat([torch.mean(atom_fea[idx], dim=0, keepdim=True) for idx in crystal_atom_idx], dim=0)

    def forward(self, atom_fea, nbr_fea, nbr_fea_idx, crystal_atom_idx, crystal_of_atom, n_crystals):
        atom_fea = self.embedding(atom_fea)
        for conv in self.convs:
            atom_fea = conv(atom_fea, nbr_fea, nbr_fea_idx)
        crys = nn.functional.softplus(self.pool(atom_fea, crystal_atom_idx, crystal_of_atom, n_crystals))
        crys = nn.functional.softplus(self.conv_to_fc(crys))
        return self.fc_out(crys)


def cgcnn_inputs(n_crystals=256, atoms=5, neighbors=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = n_crystals * atoms
    atom_fea = torch.rand(n, 92, generator=g)
    d = 1.5 + 6.5 * torch.rand(n, neighbors, generator=g)
    centers = torch.linspace(0, 8, 41)
    nbr_fea = torch.exp(-((d.unsqueeze(-1) - centers) ** 2) / 0.2 ** 2)
    crystal_of_atom = torch.arange(n) // atoms
    nbr_fea_idx = crystal_of_atom.unsqueeze(1) * atoms + torch.randint(0, atoms, (n, neighbors), generator=g)
    crystal_atom_idx = [torch.arange(i * atoms, (i + 1) * atoms) for i in range(n_crystals)]
    return atom_fea, nbr_fea, nbr_fea_idx, crystal_atom_idx, crystal_of_atom, n_crystals


def fractional_table(d: int, resolution: int = 5000, log: bool = False) -> torch.Tensor:
    """CrabNet FractionalEncoder table [resolution, d]."""
    x = torch.linspace(0, resolution - 1, resolution).view(resolution, 1)
    frac = torch.arange(0, d).view(1, d).repeat(resolution, 1)
    pe = torch.zeros(resolution, d)
    pe[:, 0::2] = torch.sin(x / torch.pow(50, 2 * frac[:, 0::2] / d))
    pe[:, 1::2] = torch.cos(x / torch.pow(50, 2 * frac[:, 1::2] / d))
    return pe


class CrabNetEncoder(nn.Module):
    def __init__(self, d_model=512, heads=4, layers=3, ffn=2048, elem_dim=200, n_elements=119, resolution=5000):
        super().__init__()
        self.elements = nn.Embedding(n_elements, elem_dim)
        self.fc_mat2vec = nn.Linear(elem_dim, d_model)
        self.emb_scaler = nn.Parameter(torch.tensor([1.0]))
        self.pos_scaler = nn.Parameter(torch.tensor([1.0]))
        self.pos_scaler_log = nn.Parameter(torch.tensor([1.0]))
        self.register_buffer("pe", fractional_table(d_model // 2, resolution))
        self.register_buffer("ple", fractional_table(d_model // 2, resolution))
        self.resolution = resolution
        layer = nn.TransformerEncoderLayer(d_model, heads, ffn, dropout=0.0, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, z, frac, mask):
        x = self.fc_mat2vec(self.elements(z)) * 2 ** self.emb_scaler
        lin = torch.clamp(torch.round(frac * self.resolution), 1, self.resolution).long() - 1
        logf = 0.0025 * (torch.log2(frac.clamp(min=1e-8))) ** 2
        logi = torch.clamp(torch.round(logf.clamp(max=1) * self.resolution), 1, self.resolution).long() - 1
        pe = self.pe[lin] * 2 ** (1 - self.pos_scaler) ** 2
        ple = self.ple[logi] * 2 ** (1 - self.pos_scaler_log) ** 2
        x = x + torch.cat([pe, ple], dim=-1)
        x = self.transformer(x, src_key_padding_mask=~mask)
        x = x * mask.unsqueeze(-1)
        return x.sum(1) / mask.sum(1, keepdim=True)


def time_steps(fn, repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")

    inputs = cgcnn_inputs()
    target = torch.ones(256, 1)
    for vectorised in (False, True):
        model = CGCNN(vectorised_pool=vectorised)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def train_step():
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(model(*inputs), target)
            loss.backward()
            opt.step()

        model.train()
        t_train = time_steps(train_step, args.repeats)
        model.eval()
        with torch.no_grad():
            t_infer = time_steps(lambda: model(*inputs), args.repeats)
        pool = "index_add pool" if vectorised else "reference pool"
        print(f"CGCNN  ({pool:14s}): train {256 / t_train:8.0f}/s  infer {256 / t_infer:8.0f}/s", flush=True)

    rng = np.random.default_rng(0)
    z = torch.as_tensor(rng.integers(1, 90, (256, 5)))
    frac = torch.full((256, 5), 0.2)
    mask = torch.ones(256, 5, dtype=torch.bool)
    crab = CrabNetEncoder()
    opt = torch.optim.AdamW(crab.parameters(), lr=1e-4)

    def crab_step():
        opt.zero_grad(set_to_none=True)
        loss = ((crab(z, frac, mask).mean(-1) - 1.0) ** 2).mean()
        loss.backward()
        opt.step()

    crab.train()
    t_train = time_steps(crab_step, args.repeats)
    crab.eval()
    with torch.no_grad():
        t_infer = time_steps(lambda: crab(z, frac, mask), args.repeats)
    n_flop_fwd = 256 * 5 * 3 * 2 * (4 * 512 * 512 + 2 * 512 * 2048)
    print(f"CrabNet encoder (5 el.)  : train {256 / t_train:8.0f}/s  infer {256 / t_infer:8.0f}/s  "
          f"(~{3 * n_flop_fwd / t_train / 1e9:.0f} GFLOP/s in the transformer layers, fwd+bwd)", flush=True)


if __name__ == "__main__":
    main()
