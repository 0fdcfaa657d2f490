"""The implementations a user would pick instead of the oracle, at the configuration of a benchmark case.

Each peer is a function ``(case, dtype) -> (kind, run)`` (or raises :class:`NoPeer` where the peer has
no counterpart of the case's configuration): ``run()`` does one forward and backward of
the peer in PyTorch eager mode, at the sizes and switches of ``case.config``, with seeded random
weights of the same shapes (the time does not depend on the values) and a fixed random cotangent.

* ``HF LSHSelfAttention``: transformers' Reformer LSH self-attention followed by the output
  projection (``ReformerSelfOutput`` is a bias-free linear layer), same rounds, buckets, chunk
  length and heads; HF always attends to the previous chunk across buckets.
* ``HF ElectraForMaskedLM`` / ``HF ElectraForPreTraining``: the generator and the discriminator
  at the configuration's widths, heads, layers and vocabulary; the whole objective runs both.
* ``HF AlbertForPreTraining`` / ``HF AlbertModel``: one shared layer group (the paper's all-shared
  ALBERT); the other sharing modes have no HF counterpart and keep the torch(oracle) column only.
* ``lucidrains SelfAttention``: compressive-transformer-pytorch's memory attention (convolutional
  compression, the attention-reconstruction loss in training mode) in a post-norm layer with its
  feed-forward block, the layer the oracle's compressive mechanism computes.
* ``HF ReformerLayer stack``: transformers' ``ReformerEncoder`` (reversible layers that recompute the
  forward in the backward), full attention as one local chunk the length of the sequence, or LSH.
* ``torch.nn.TransformerEncoderLayer`` / ``TransformerDecoderLayer`` for the encoder and decoder layers.
* ``torch LightConv/DynamicConv``: the LSRA block written here in PyTorch from the Lite Transformer
  and Pay-Less-Attention papers (fairseq's formulation: a softmax-normalised kernel per head shared by
  its channels, a depthwise ``conv1d``; DynamicConv's kernels from a linear map of the input), with
  PyTorch's fused attention for the global branch.

The dense building blocks' peers (``torch.nn.functional``) are in :mod:`benchmarks.torch_eq`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from reference.registry import Case

Runner = tuple[str, Callable[[], None]]


class NoPeer(Exception):
    """The peer has no counterpart of this configuration (the message says which switch); the table says so."""


def _torch_dtype(dtype: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[dtype]


def _backward_runner(module: torch.nn.Module | None, forward: Callable[[], Any]) -> Callable:
    """run(): zero the gradients, forward, backward of sum(out * cot) (cot drawn once, of out's shape)."""
    cot: dict[str, torch.Tensor] = {}

    def run() -> None:
        if module is not None:
            module.zero_grad(set_to_none=True)
        out = forward()
        if out.ndim == 0:
            out.backward()
            return
        if "c" not in cot:
            g = torch.Generator().manual_seed(1)
            cot["c"] = torch.randn(out.shape, generator=g, dtype=out.dtype)
        out.backward(cot["c"])

    return run


def _randn(shape, dtype, seed: int = 0, requires_grad: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype).requires_grad_(requires_grad)


# ---------------------------------------------------------------- Reformer LSH attention (HF)

def lsh_attention(case: Case, dtype: str) -> Runner:
    from transformers import ReformerConfig
    from transformers.models.reformer.modeling_reformer import LSHSelfAttention

    c = case.config
    if c.d_k != c.d_v:
        raise NoPeer("HF has one head width for queries, keys and values (d_k != d_v)")
    if c.padded:
        raise NoPeer("HF LSH attention takes no padding mask")
    td = _torch_dtype(dtype)
    config = ReformerConfig(hidden_size=c.d_model, num_attention_heads=c.n_heads, attention_head_size=c.d_k,
                            num_hashes=c.n_hashes, num_buckets=c.n_buckets, lsh_attn_chunk_length=c.chunk_len,
                            lsh_num_chunks_before=1, lsh_num_chunks_after=0, is_decoder=c.causal,
                            lsh_attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0,
                            max_position_embeddings=c.seq_len, axial_pos_embds=False, attn_layers=["lsh"])
    torch.manual_seed(0)
    attention = LSHSelfAttention(config).to(td).train()
    out_proj = torch.nn.Linear(c.n_heads * c.d_k, c.d_model, bias=False).to(td)
    x = _randn((c.batch, c.seq_len, c.d_model), td)
    params = torch.nn.ModuleList([attention, out_proj])

    def forward():
        x.grad = None
        return out_proj(attention(hidden_states=x).hidden_states)

    return "HF LSHSelfAttention", _backward_runner(params, forward)


# ---------------------------------------------------------------- Reversible stack (HF ReformerLayer)

def reversible(case: Case, dtype: str) -> Runner:
    """HF's ReformerEncoder: a stack of reversible ReformerLayer blocks (recomputing the forward in the
    backward, like the oracle), full attention as one local chunk the length of the sequence, or LSH."""
    from transformers import ReformerConfig
    from transformers.models.reformer.modeling_reformer import ReformerEncoder

    c = case.config
    if c is None:
        raise NoPeer("the mechanism has no configuration yet")
    lsh = getattr(c, "attention", "full") == "lsh"
    td = _torch_dtype(dtype)
    d_head = c.d_model // c.n_heads
    config = ReformerConfig(hidden_size=c.d_model, num_attention_heads=c.n_heads, attention_head_size=d_head,
                            feed_forward_size=c.d_ff, num_hidden_layers=c.n_layers,
                            attn_layers=["lsh" if lsh else "local"] * c.n_layers, is_decoder=c.causal,
                            local_attn_chunk_length=c.seq_len, local_num_chunks_before=0, local_num_chunks_after=0,
                            lsh_attn_chunk_length=getattr(c, "chunk_len", 64), num_buckets=getattr(c, "n_buckets", 2),
                            num_hashes=getattr(c, "n_hashes", 1), lsh_num_chunks_before=1, lsh_num_chunks_after=0,
                            hidden_dropout_prob=0.0, local_attention_probs_dropout_prob=0.0,
                            lsh_attention_probs_dropout_prob=0.0, hidden_act="gelu",
                            max_position_embeddings=c.seq_len, axial_pos_embds=False)
    torch.manual_seed(0)
    encoder = ReformerEncoder(config).to(td).train()
    x = _randn((c.batch, c.seq_len, c.d_model), td)

    def forward():
        x.grad = None
        return encoder(hidden_states=x, head_mask=[None] * c.n_layers).hidden_states

    return "HF ReformerLayer stack", _backward_runner(encoder, forward)


# ---------------------------------------------------------------- Encoder and decoder layers (torch.nn)

def transformer_layer(decoder: bool) -> Callable[[Case, str], Runner]:
    """torch.nn.TransformerEncoderLayer / TransformerDecoderLayer (post-norm, GELU, batch first)."""

    def peer(case: Case, dtype: str) -> Runner:
        c = case.config
        td = _torch_dtype(dtype)
        rate = getattr(c, "dropout", 0.0)
        activation = "gelu" if getattr(c, "activation", "gelu") == "gelu" else (lambda z: F.gelu(z, approximate="tanh"))
        torch.manual_seed(0)
        cls = torch.nn.TransformerDecoderLayer if decoder else torch.nn.TransformerEncoderLayer
        layer = cls(c.d_model, c.n_heads, c.d_ff, dropout=rate, activation=activation, batch_first=True).to(td).train()
        x = _randn((c.batch, c.seq_len, c.d_model), td)
        pad = torch.zeros(c.batch, c.source_len if decoder else c.seq_len, dtype=torch.bool)
        if c.n_padded:
            pad[0 if decoder else -1, pad.shape[1] - c.n_padded:] = True
        if decoder:
            memory = _randn((c.batch, c.source_len, c.d_model), td, seed=1)
            causal = torch.nn.Transformer.generate_square_subsequent_mask(c.seq_len, dtype=td)

        def forward():
            x.grad = None
            if decoder:
                memory.grad = None
                return layer(x, memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=pad)
            return layer(x, src_key_padding_mask=pad)

        return f"torch.nn.Transformer{'Decoder' if decoder else 'Encoder'}Layer", _backward_runner(layer, forward)

    return peer


# ---------------------------------------------------------------- ELECTRA (HF)

def _electra_config(c, which: str):
    from transformers import ElectraConfig

    gen = which == "generator"
    return ElectraConfig(vocab_size=c.vocab, embedding_size=c.width, hidden_size=c.d_gen if gen else c.d_disc,
                         num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads_gen if gen else c.n_heads_disc,
                         intermediate_size=c.ff_gen if gen else c.ff_disc, max_position_embeddings=max(512, c.seq_len),
                         hidden_act=c.activation, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                         layer_norm_eps=c.eps)


def electra(which: str) -> Callable[[Case, str], Runner]:
    def peer(case: Case, dtype: str) -> Runner:
        from transformers import ElectraForMaskedLM, ElectraForPreTraining

        c = case.config
        td = _torch_dtype(dtype)
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(4, c.vocab, (c.batch, c.seq_len), generator=g)
        attention_mask = torch.ones(c.batch, c.seq_len, dtype=torch.long)
        masked = torch.rand(c.batch, c.seq_len, generator=g) < c.mask_rate
        mlm_labels = torch.where(masked, ids, torch.full_like(ids, -100))
        disc_labels = (torch.rand(c.batch, c.seq_len, generator=g) < c.mask_rate * 0.8).long()
        models = torch.nn.ModuleList()
        if which in ("generator", "both"):
            models.append(ElectraForMaskedLM(_electra_config(c, "generator")).to(td).train())
        if which in ("discriminator", "both"):
            models.append(ElectraForPreTraining(_electra_config(c, "discriminator")).to(td).train())

        def forward():
            loss = 0.0
            for model in models:
                labels = mlm_labels if isinstance(model, ElectraForMaskedLM) else disc_labels
                loss = loss + model(input_ids=ids, attention_mask=attention_mask, labels=labels).loss
            return loss

        kind = {"generator": "HF ElectraForMaskedLM", "discriminator": "HF ElectraForPreTraining",
                "both": "HF ElectraForMaskedLM + ElectraForPreTraining"}[which]
        return kind, _backward_runner(models, forward)

    return peer


# ---------------------------------------------------------------- ALBERT (HF)

def albert(pretraining: bool) -> Callable[[Case, str], Runner]:
    def peer(case: Case, dtype: str) -> Runner:
        from transformers import AlbertConfig, AlbertForPreTraining, AlbertModel

        c = case.config
        if c.sharing != "all":
            raise NoPeer(f"HF ALBERT shares all layers (sharing={c.sharing!r} has no HF counterpart)")
        td = _torch_dtype(dtype)
        config = AlbertConfig(vocab_size=c.vocab, embedding_size=c.embedding, hidden_size=c.hidden,
                              num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads, intermediate_size=c.d_ff,
                              max_position_embeddings=c.positions, hidden_act="gelu", hidden_dropout_prob=c.dropout,
                              attention_probs_dropout_prob=c.dropout, classifier_dropout_prob=c.dropout)
        torch.manual_seed(0)
        model = (AlbertForPreTraining if pretraining else AlbertModel)(config).to(td).train()
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, c.vocab, (c.batch, c.seq_len), generator=g)
        mask = torch.ones(c.batch, c.seq_len, dtype=torch.long)
        if c.padded:
            mask[-1, c.seq_len - c.padded:] = 0
        labels = torch.where(torch.rand(c.batch, c.seq_len, generator=g) < 0.15, ids, torch.full_like(ids, -100))
        sop = torch.randint(0, 2, (c.batch,), generator=g)

        def forward():
            if pretraining:
                return model(input_ids=ids, attention_mask=mask, labels=labels, sentence_order_label=sop).loss
            return model(input_ids=ids, attention_mask=mask).last_hidden_state

        return ("HF AlbertForPreTraining" if pretraining else "HF AlbertModel"), _backward_runner(model, forward)

    return peer


# ---------------------------------------------------------------- Compressive memory (lucidrains)

def compressive(case: Case, dtype: str) -> Runner:
    from compressive_transformer_pytorch.compressive_transformer_pytorch import FeedForward, SelfAttention

    c = case.config
    if c.kind != "conv":
        raise NoPeer(f"lucidrains compresses with a strided convolution only (kind={c.kind!r})")
    if c.d_ff % c.d_model or c.n_cmem == 0:
        raise NoPeer("lucidrains needs d_ff a multiple of d_model and a compressed memory")
    td = _torch_dtype(dtype)
    torch.manual_seed(0)
    attention = SelfAttention(c.d_model, c.seq_len, c.n_mem, c.n_cmem, cmem_ratio=c.rate, heads=c.n_heads,
                              attn_dropout=c.dropout, dropout=c.dropout).to(td).train()
    ffn = FeedForward(c.d_model, mult=c.d_ff // c.d_model, dropout=c.dropout).to(td).train()
    norms = torch.nn.ModuleList([torch.nn.LayerNorm(c.d_model), torch.nn.LayerNorm(c.d_model)]).to(td)
    modules = torch.nn.ModuleList([attention, ffn, norms])
    h = _randn((c.batch, c.seq_len, c.d_model), td)
    mem = _randn((c.batch, c.n_mem, c.d_model), td, seed=1, requires_grad=False)
    cmem = _randn((c.batch, c.n_cmem, c.d_model), td, seed=2, requires_grad=False)
    cot = torch.randn((c.batch, c.seq_len, c.d_model), generator=torch.Generator().manual_seed(3), dtype=td)
    weight = attention.to_kv.weight.data.clone()

    def run() -> None:
        modules.zero_grad(set_to_none=True)
        h.grad = None
        attention.to_kv.weight.data.copy_(weight)  # lucidrains detaches to_kv's weight in place during the aux loss
        attention.to_kv.weight.requires_grad_(True)
        a, _, aux = attention(h, memories=(mem, cmem))
        a1 = norms[0](h + a)
        y = norms[1](a1 + ffn(a1))
        torch.autograd.backward([y, aux], [cot, torch.ones_like(aux)])

    return "lucidrains SelfAttention", run


# ---------------------------------------------------------------- LSRA (torch, from the papers)

class _LSRA(torch.nn.Module):
    """The LSRA block of Lite Transformer in PyTorch eager (fairseq's LightConv / DynamicConv formulation)."""

    def __init__(self, c) -> None:
        super().__init__()
        d, da, dc = c.d_model, c.d_attn, c.d_model - c.d_attn
        self.c = c
        self.qkv = torch.nn.Linear(da, 3 * da)
        self.attn_out = torch.nn.Linear(da, da)
        self.conv_in = torch.nn.Linear(dc, 2 * dc if c.glu else dc)
        self.conv_out = torch.nn.Linear(dc, dc)
        if c.conv == "lightweight":
            self.kernel = torch.nn.Parameter(torch.randn(c.n_conv_heads, c.kernel_size))
        else:
            self.kernel_gen = torch.nn.Linear(dc, c.n_conv_heads * c.kernel_size, bias=False)
        d_ff = c.d_ff or d
        self.ffn = torch.nn.Sequential(torch.nn.Linear(d, d_ff), torch.nn.ReLU(), torch.nn.Dropout(c.dropout_rate),
                                       torch.nn.Linear(d_ff, d))
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        c = self.c
        b, t, _ = x.shape
        xa, xc = x[..., :c.d_attn], x[..., c.d_attn:]
        q, k, v = (z.reshape(b, t, c.n_attn_heads, -1).transpose(1, 2) for z in self.qkv(xa).chunk(3, dim=-1))
        mask = None if valid is None else valid[:, None, None, :]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=c.causal and mask is None,
                                           dropout_p=c.dropout_rate)
        a = self.attn_out(a.transpose(1, 2).reshape(b, t, c.d_attn))
        z = self.conv_in(xc)
        z = F.glu(z, dim=-1) if c.glu else z
        if valid is not None:
            z = z * valid[..., None]
        k_, dc, h = c.kernel_size, z.shape[-1], c.n_conv_heads
        left = k_ - 1 if c.causal else k_ // 2
        zpad = F.pad(z.transpose(1, 2), (left, k_ - 1 - left))  # (B, Dc, T + K - 1)
        if c.conv == "lightweight":
            w = F.dropout(torch.softmax(self.kernel, dim=-1), c.dropout_rate, self.training)  # (H, K)
            conv = F.conv1d(zpad, w.repeat_interleave(dc // h, dim=0)[:, None, :], groups=dc).transpose(1, 2)
        else:
            w = torch.softmax(self.kernel_gen(z).reshape(b, t, h, k_), dim=-1)  # (B, T, H, K)
            w = F.dropout(w, c.dropout_rate, self.training)
            windows = zpad.unfold(2, k_, 1).permute(0, 2, 1, 3).reshape(b, t, h, dc // h, k_)  # (B, T, H, R, K)
            conv = torch.einsum("bthrk,bthk->bthr", windows, w).reshape(b, t, dc)
        y = F.dropout(torch.cat([a, self.conv_out(conv)], dim=-1), c.dropout_rate, self.training)
        h1 = self.ln1(x + y)
        return self.ln2(h1 + F.dropout(self.ffn(h1), c.dropout_rate, self.training))


def lsra(case: Case, dtype: str) -> Runner:
    c = case.config
    td = _torch_dtype(dtype)
    torch.manual_seed(0)
    block = _LSRA(c).to(td).train()
    x = _randn((c.batch, c.seq_len, c.d_model), td)
    valid = None
    if c.n_padded and not c.causal:
        valid = torch.ones(c.batch, c.seq_len, dtype=torch.bool)
        valid[-1, c.seq_len - c.n_padded:] = False

    def forward():
        x.grad = None
        return block(x, valid)

    return f"torch {'LightConv' if c.conv == 'lightweight' else 'DynamicConv'} (from the papers)", \
        _backward_runner(block, forward)


def peer_for(name: str) -> Callable[[Case, str], Runner] | None:
    """The peer of mechanism ``name`` (variants share their mechanism's), or None."""
    if name.startswith("attention.lsh") and not name.endswith(".dense"):
        return lsh_attention
    if name.startswith("attention.lsra"):
        return lsra
    if name == "objectives.electra":
        return electra("both")
    if name == "objectives.electra.generator":
        return electra("generator")
    if name == "objectives.electra.discriminator":
        return electra("discriminator")
    if name.startswith("architecture.albert"):
        return albert(pretraining=name != "architecture.albert.encoder")
    if name.startswith("architecture.compressive"):
        return compressive
    if name.startswith("architecture.reversible"):
        return reversible
    if name == "nn.encoder_layer":
        return transformer_layer(decoder=False)
    if name == "nn.decoder_layer":
        return transformer_layer(decoder=True)
    return None

