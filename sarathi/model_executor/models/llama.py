"""The Llama family: Llama 2/3, Mistral, Qwen2 (qkv bias) and Qwen3 (per-head q/k norm).

One implementation; the differences are flags in ``ModelShape``. Projections are fused
(q|k|v and gate|up) so a layer does two matmuls where the reference does five; the loader
packs the checkpoint's separate tensors into them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from sarathi.model_executor.attention import AttentionBackend, AttentionMetadata, DecodeRope
from sarathi.model_executor.kernel_switches import REFERENCE, KernelSwitches
from sarathi.model_executor.layers import fused, gemv
from sarathi.model_executor.layers.layernorm import RMSNorm
from sarathi.model_executor.layers.rotary import RotaryEmbedding
from sarathi.model_executor.model_shape import ModelShape
from sarathi.model_executor.parallel import (
    TensorSlice,
    TPGroup,
    column_linear,
    head_layout,
    lm_head,
    row_linear,
    vocab_embedding,
)
from sarathi.model_executor.parallel.sharding import split_evenly, vocab_range


class LayerCaches(Protocol):
    """The model's view of a KV cache: each layer's K and V tensors."""

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class ForwardContext:
    """Per-step state shared by all layers."""

    meta: AttentionMetadata
    kv_cache: LayerCaches
    attention: AttentionBackend
    rotary: RotaryEmbedding


class LlamaAttention(nn.Module):
    def __init__(self, s: ModelShape, layer_idx: int, tp: TPGroup, k: KernelSwitches) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        heads = head_layout(s.num_heads, s.num_kv_heads, tp.rank, tp.world_size)
        self.num_heads, self.num_kv_heads, self.head_dim = (
            heads.num_heads,
            heads.num_kv_heads,
            s.head_dim,
        )
        self.q_size = self.num_heads * s.head_dim
        self.kv_size = self.num_kv_heads * s.head_dim
        # At batch 1 the rotary kernel adds up the q|k|v matmul's split sums itself, unless
        # q/k norms sit in between.
        self.qkv_proj = column_linear(
            s.hidden_size,
            self.q_size + 2 * self.kv_size,
            s.qkv_bias,
            tp,
            keep_splits=not s.qk_norm,
            kernels=k,
        )
        # o_proj, gate_up and down feed fused kernels that can add up split sums. The
        # layer's two row-parallel matmuls take alternate slots of the fused all-reduce.
        self.o_proj = row_linear(
            self.q_size, s.hidden_size, False, tp, keep_splits=True, kernels=k, peer_slot=0
        )
        self.q_norm = RMSNorm(s.head_dim, s.rms_norm_eps, k) if s.qk_norm else None
        self.k_norm = RMSNorm(s.head_dim, s.rms_norm_eps, k) if s.qk_norm else None
        self.scale = s.head_dim**-0.5
        self.window = s.sliding_windows[layer_idx]

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor | gemv.SplitSums:
        t = x.shape[0]
        qkv = self.qkv_proj(x)
        sums = qkv if isinstance(qkv, gemv.SplitSums) else None
        if sums is not None:  # q, k, v: views into the first split, read with the others
            qkv = sums.parts[:1]
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(t, self.num_heads, self.head_dim)
        k = k.view(t, self.num_kv_heads, self.head_dim)
        v = v.view(t, self.num_kv_heads, self.head_dim)
        q_norm, k_norm = self.q_norm, self.k_norm
        if q_norm is not None and k_norm is not None:
            q, k = q_norm(q), k_norm(k)
        k_cache, v_cache = ctx.kv_cache.layer(self.layer_idx)
        o = None
        if sums is not None:  # one row: the attention kernel may take the rotary in too
            rope = DecodeRope(
                k, v, ctx.rotary.cos, ctx.rotary.sin, ctx.meta.positions, sums.dtype,
                sums.parts.shape[0], sums.parts.stride(0),
            )  # fmt: skip
            o = ctx.attention.decode_rope(
                q, rope, k_cache, v_cache, ctx.meta, self.scale, self.window
            )
        if o is None:
            q = ctx.rotary.apply_and_store(
                q, k, v, ctx.meta.positions, k_cache, v_cache, ctx.attention.kv_index(ctx.meta),
                sums,
            )  # fmt: skip
            o = ctx.attention.forward(q, k_cache, v_cache, ctx.meta, self.scale, self.window)
        return self.o_proj(o.reshape(t, self.q_size))


class LlamaMLP(nn.Module):
    def __init__(self, s: ModelShape, tp: TPGroup, k: KernelSwitches) -> None:
        super().__init__()
        self.kernels = k
        self.inter = split_evenly(
            s.intermediate_size, tp.rank, tp.world_size, "intermediate_size"
        ).length
        # With fused kernels, forward hands this weight to fused.silu_mul_linear, which
        # finishes SiLU-and-mul with (or right after) the matmul.
        self.gate_up_proj = column_linear(s.hidden_size, 2 * self.inter, False, tp, kernels=k)
        self.down_proj = row_linear(
            self.inter, s.hidden_size, False, tp, keep_splits=True, kernels=k, peer_slot=1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | gemv.SplitSums:
        if self.kernels.fused:
            h = fused.silu_mul_linear(x, self.gate_up_proj.weight, self.inter, self.kernels)
            return self.down_proj(h)
        gate, up = self.gate_up_proj(x).split(self.inter, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class LlamaDecoderLayer(nn.Module):
    def __init__(self, s: ModelShape, layer_idx: int, tp: TPGroup, k: KernelSwitches) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(s.hidden_size, s.rms_norm_eps, k)
        self.self_attn = LlamaAttention(s, layer_idx, tp, k)
        self.post_attention_layernorm = RMSNorm(s.hidden_size, s.rms_norm_eps, k)
        self.mlp = LlamaMLP(s, tp, k)

    def forward(
        self, x: torch.Tensor | gemv.SplitSums, residual: torch.Tensor | None, ctx: ForwardContext
    ) -> tuple[torch.Tensor | gemv.SplitSums, torch.Tensor]:
        """x: the previous layer's output, not yet added to ``residual`` (the running sum
        of the stream; None at the first layer): the add is fused into the norm, and at
        batch 1 so is the sum of the previous matmul's K splits."""
        if residual is None:
            assert isinstance(x, torch.Tensor)  # the first layer's input: the embeddings
            residual, h = x, self.input_layernorm(x)
        else:
            h, residual = self.input_layernorm(x, residual)
        h, residual = self.post_attention_layernorm(self.self_attn(h, ctx), residual)
        return self.mlp(h), residual


class LlamaModel(nn.Module):
    def __init__(self, s: ModelShape, tp: TPGroup, k: KernelSwitches) -> None:
        super().__init__()
        self.embed_tokens = vocab_embedding(s.vocab_size, s.hidden_size, tp)
        self.layers = nn.ModuleList(LlamaDecoderLayer(s, i, tp, k) for i in range(s.num_layers))
        self.norm = RMSNorm(s.hidden_size, s.rms_norm_eps, k)

    def forward(self, input_ids: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        x, residual = self.embed_tokens(input_ids), None
        for layer in self.layers:
            x, residual = layer(x, residual, ctx)
        return self.norm(x, residual)[0]


class LlamaForCausalLM(nn.Module):
    """Serves LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM and Qwen3ForCausalLM."""

    # checkpoint name fragment -> (our fused parameter, shard index)
    packed: ClassVar[dict[str, tuple[str, int]]] = {
        "q_proj": ("qkv_proj", 0),
        "k_proj": ("qkv_proj", 1),
        "v_proj": ("qkv_proj", 2),
        "gate_proj": ("gate_up_proj", 0),
        "up_proj": ("gate_up_proj", 1),
    }

    def __init__(
        self, s: ModelShape, tp: TPGroup | None = None, kernels: KernelSwitches = REFERENCE
    ) -> None:
        """``kernels``: the fast paths its layers take (``KernelSwitches.resolve`` for the
        device it runs on; the default, the PyTorch reference ops)."""
        super().__init__()
        self.shape = s
        self.tp = tp = tp or TPGroup()
        self.kernels = kernels
        self.model = LlamaModel(s, tp, kernels)
        self.lm_head = lm_head(s.hidden_size, s.vocab_size, tp, kernels)
        if s.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def shard_sizes(self, fused: str) -> list[int]:
        """Sizes of the parts of a fused parameter on this rank."""
        layer = self.model.layers[0]
        assert isinstance(layer, LlamaDecoderLayer)
        attn, mlp = layer.self_attn, layer.mlp
        if fused == "qkv_proj":
            return [attn.q_size, attn.kv_size, attn.kv_size]
        return [mlp.inter, mlp.inter]

    def tp_slice(self, target: str, shard: int | None) -> TensorSlice | None:
        """The part of checkpoint tensor ``target`` (our name; ``shard`` is its index in a
        fused parameter) that this rank holds; None: the whole tensor (replicated)."""
        tp, s = self.tp, self.shape
        if tp.world_size == 1:
            return None
        if ".qkv_proj." in target:
            heads = head_layout(s.num_heads, s.num_kv_heads, tp.rank, tp.world_size)
            d = s.head_dim
            if shard == 0:
                return TensorSlice(0, heads.q_start * d, heads.num_heads * d, s.num_heads * d)
            return TensorSlice(0, heads.kv_start * d, heads.num_kv_heads * d, s.num_kv_heads * d)
        if ".gate_up_proj." in target:
            return split_evenly(s.intermediate_size, tp.rank, tp.world_size, "intermediate_size")
        if ".o_proj." in target:
            heads = head_layout(s.num_heads, s.num_kv_heads, tp.rank, tp.world_size)
            d = s.head_dim
            return TensorSlice(1, heads.q_start * d, heads.num_heads * d, s.num_heads * d)
        if ".down_proj." in target:
            part = split_evenly(s.intermediate_size, tp.rank, tp.world_size, "intermediate_size")
            return TensorSlice(1, part.start, part.length, part.full)
        if target in ("model.embed_tokens.weight", "lm_head.weight"):
            start, end, _ = vocab_range(s.vocab_size, tp.rank, tp.world_size)
            return TensorSlice(0, start, end - start, s.vocab_size)
        return None

    def forward(self, input_ids: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        return self.model(input_ids, ctx)

    def compute_logits(self, hidden: torch.Tensor, upcast: bool = True) -> torch.Tensor | None:
        """Full-vocabulary logits on the sampling rank (rank 0), float32 unless ``upcast``
        is False (the sampler upcasts only where it computes more than an argmax); None on
        the other ranks."""
        logits = self.lm_head(hidden)
        if logits is None:
            return None
        return logits.float() if upcast else logits
