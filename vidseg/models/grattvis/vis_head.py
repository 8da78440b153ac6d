"""The GRAtt-VIS head: VITA's object encoder and decoder with GenVIS propagation and the GRAtt block (§3).

Held by the model as ``vita_module``; submodule names are the official ones, so ``vita_module.*`` keys of
VITA, GenVIS and GRAtt-VIS checkpoints load unchanged (149 keys without memory, +8 with ``use_mem``). One
``step`` decodes one clip of W frames (W = 1: online) from the clip's frame queries and the propagated query:

1. ``input_proj_dec`` on the frame queries, then ``enc_layers`` x (self-attention, FFN), post-norm, with no
   positional embedding (optionally VITA's shifted windows over frames, ``enc_window_size > 0``);
2. the memory read (``use_mem``): ``o <- o + v_q + r``; then ``q_in = o``, fixed for the step;
3. per decoder layer: cross-attention to the encoded frame queries (key pos ``fq_pos``, query pos
   ``query_embed``), the GRAtt block (``gated_prop``: gate, gated residual with ``q_in``, attention bias),
   self-attention (``q = k = output + query_embed``, ``attn_mask`` = the gate bias), FFN;
4. the shared ``decoder_norm`` and the heads (class K+1, mask embedding, similarity embeddings);
5. the memory write (``use_mem``) and the un-normalised last output as the next step's query.
"""

from __future__ import annotations

from math import ceil

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidseg.layers.mlp import MLP
from vidseg.models.grattvis.gate import (
    DEFAULT_TEMPERATURE,
    gate_attention_bias,
    gated_residual,
    gumbel_sigmoid_gate,
    share_last_copy,
)
from vidseg.models.grattvis.memory import NoMemory, QueryMemory
from vidseg.models.mask2former.pixel_decoder import c2_xavier_fill
from vidseg.models.mask2former.transformer_decoder import CrossAttentionLayer, FFNLayer, SelfAttentionLayer

__all__ = ["GRAttVISHead"]


class _SelfAttention(SelfAttentionLayer):
    """VITA's post-norm self-attention (``self_attn``, ``norm``) with optional position, mask and padding.

    Sequences are ``[S, N, C]``; ``attn_mask`` is ``nn.MultiheadAttention``'s (a float one is added to the
    logits).
    """

    def forward(  # type: ignore[override]
        self,
        tgt: Tensor,
        query_pos: Tensor | None = None,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        q = k = tgt if query_pos is None else tgt + query_pos
        out = self.self_attn(
            q, k, value=tgt, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False
        )[0]
        return self.norm(tgt + self.dropout(out))


class GRAttVISHead(nn.Module):
    """VITA / GenVIS / GRAtt-VIS VIS head (``vita_module``); see the module docstring for one step.

    Args:
        num_classes: K (the class head has K + 1 outputs, the last one "no object").
        hidden_dim: C.
        num_frame_queries: fQ, the detector's queries per frame (rows of ``fq_pos``).
        num_queries: cQ, the video queries.
        nheads, dim_feedforward: attention heads and FFN width of every layer.
        enc_layers, dec_layers: object-encoder and decoder depths (6 and 3).
        enc_window_size: VITA's window over frames in the encoder (0: full attention over the step's frames).
        enforce_input_proj: ``input_proj_dec`` is a Linear (else an empty Sequential without keys).
        mask_dim: width of the mask embedding and of ``vita_mask_features``' output.
        sim_embed: build ``sim_embed_frame`` / ``sim_embed_clip`` (SIM_WEIGHT > 0).
        gated_prop: the GRAtt block (``prop_instance``) in every decoder layer.
        use_mem: GenVIS's memory (``pre_{query,memory}_embed_{k,v}``).
        gate_temperature: the Gumbel-sigmoid temperature.
        window: W, the frames per step in training (LEN_CLIP_WINDOW).
        conv_dim: input channels of ``vita_mask_features`` (the pixel decoder's CONVS_DIM); ``hidden_dim``
            when None.
    """

    def __init__(
        self,
        num_classes: int,
        hidden_dim: int = 256,
        num_frame_queries: int = 100,
        num_queries: int = 100,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        enc_layers: int = 6,
        dec_layers: int = 3,
        enc_window_size: int = 0,
        enforce_input_proj: bool = True,
        mask_dim: int = 256,
        sim_embed: bool = True,
        gated_prop: bool = True,
        use_mem: bool = False,
        gate_temperature: float = DEFAULT_TEMPERATURE,
        window: int = 1,
        conv_dim: int | None = None,
    ) -> None:
        super().__init__()
        if dec_layers < 1:
            raise ValueError(f"GRAttVISHead: MODEL.VITA.DEC_LAYERS must be >= 1, got {dec_layers}")
        if enc_window_size < 0:
            raise ValueError(f"GRAttVISHead: MODEL.VITA.ENC_WINDOW_SIZE must be >= 0, got {enc_window_size}")
        if window < 1:
            raise ValueError(f"GRAttVISHead: MODEL.GENVIS.LEN_CLIP_WINDOW must be >= 1, got {window}")
        self.num_classes = num_classes
        self.hidden_dim = hidden_dim
        self.num_queries = num_queries
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.enc_layers = enc_layers
        self.enc_window_size = enc_window_size
        self.gated_prop = gated_prop
        self.use_mem = use_mem
        self.gate_temperature = gate_temperature
        self.window = window
        self.use_sim = sim_embed

        if enc_layers > 0:
            self.enc_self_attn = nn.ModuleList(_SelfAttention(hidden_dim, nheads) for _ in range(enc_layers))
            self.enc_ffn = nn.ModuleList(FFNLayer(hidden_dim, dim_feedforward) for _ in range(enc_layers))
        self.transformer_self_attention_layers = nn.ModuleList(
            _SelfAttention(hidden_dim, nheads) for _ in range(dec_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads) for _ in range(dec_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward) for _ in range(dec_layers)
        )

        self.vita_mask_features = nn.Conv2d(conv_dim or hidden_dim, mask_dim, kernel_size=1)
        c2_xavier_fill(self.vita_mask_features)
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.fq_pos = nn.Embedding(num_frame_queries, hidden_dim)
        self.input_proj_dec = nn.Linear(hidden_dim, hidden_dim) if enforce_input_proj else nn.Sequential()
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        if sim_embed:
            self.sim_embed_frame = nn.Linear(hidden_dim, hidden_dim)
            self.sim_embed_clip = nn.Linear(hidden_dim, hidden_dim)
        if gated_prop:
            self.prop_instance = nn.Linear(hidden_dim, 1)
        if use_mem:
            self.pre_memory_embed_k = nn.Linear(hidden_dim, hidden_dim)
            self.pre_memory_embed_v = nn.Linear(hidden_dim, hidden_dim)
            self.pre_query_embed_k = nn.Linear(hidden_dim, hidden_dim)
            self.pre_query_embed_v = nn.Linear(hidden_dim, hidden_dim)

    # ------------------------------------------------------------------ small helpers
    def initial_query(self, n: int) -> Tensor:
        """The first step's query ``[cQ, n, C]``: ``query_feat`` repeated over the ``n = L*B`` batch items."""
        return self.query_feat.weight.unsqueeze(1).repeat(1, n, 1)

    def new_memory(self) -> QueryMemory:
        """An empty memory for one video (a ``NoMemory`` that stores nothing when ``use_mem`` is False)."""
        return QueryMemory() if self.use_mem else NoMemory()

    def mask_features(self, clip_mask_features: Tensor) -> Tensor:
        """``vita_mask_features`` (1x1 conv) on stride-4 maps ``[N, C, h, w]`` -> ``[N, mask_dim, h, w]``."""
        return self.vita_mask_features(clip_mask_features)

    # ------------------------------------------------------------------ encoder
    def _encode(self, x: Tensor) -> Tensor:
        """The object encoder: ``[W, fQ, N, C]`` -> ``[W, fQ, N, C]``, no positional embedding."""
        if self.enc_layers == 0:
            return x
        if self.enc_window_size == 0:
            shape = x.shape
            x = x.flatten(0, 1)
            for attn, ffn in zip(self.enc_self_attn, self.enc_ffn, strict=True):
                x = ffn(attn(x))
            return x.view(shape)
        return self._encode_windowed(x)

    def _encode_windowed(self, x: Tensor) -> Tensor:
        """VITA's windowed encoder over frames (``enc_window_size`` > 0), ``[T, fQ, N, C]`` -> the same.

        The frames are zero-padded to a multiple of the window w. Even layers (every layer in training)
        attend within windows of w frames, padded frames masked as keys; odd layers at test time attend within
        windows shifted by ``ceil(w / 2)`` frames with VITA's -1000 float bias (padded frames and the
        wrapped-around part of the first window are cut off).
        """
        t, fq, n, c = x.shape
        w = self.enc_window_size
        pad = ceil(t / w) * w - t
        x = F.pad(x, (0, 0, 0, 0, 0, 0, 0, pad))
        tp = t + pad
        nw, half = tp // w, ceil(w / 2)
        padded = torch.ones(n, tp, dtype=torch.bool, device=x.device)
        padded[:, :t] = False
        key_pad = padded.view(n * nw, w)[..., None].expand(n * nw, w, fq).flatten(1)  # [n*nw, w*fQ]
        blocked = torch.roll(padded, half, 1).view(n, nw, w)[..., None].repeat(1, 1, 1, w)  # [n, nw, w, w]
        blocked[:, 0] = blocked[:, 0] | blocked[:, 0].transpose(-2, -1)
        blocked[:, -1] = blocked[:, -1] | blocked[:, -1].transpose(-2, -1)
        blocked[:, 0, :half, half:] = True
        blocked[:, 0, half:, :half] = True
        shift_bias = (
            blocked.view(n * nw, 1, w, 1, w, 1)
            .repeat(1, self.num_heads, 1, fq, 1, fq)
            .view(n * nw * self.num_heads, w * fq, w * fq)
            .to(x.dtype)
            * -1000
        )

        def windowed(y: Tensor, i: int, **mask: Tensor) -> Tensor:
            y = y.view(nw, w, fq, n, c).permute(1, 2, 3, 0, 4).reshape(w * fq, n * nw, c)
            y = self.enc_ffn[i](self.enc_self_attn[i](y, **mask))
            return y.reshape(w, fq, n, nw, c).permute(3, 0, 1, 2, 4).reshape(tp, fq, n, c)

        for i in range(self.enc_layers):
            if self.training or i % 2 == 0:
                x = windowed(x, i, key_padding_mask=key_pad)
            else:
                x = torch.roll(windowed(torch.roll(x, half, 0), i, attn_mask=shift_bias), -half, 0)
        return x[:t]

    # ------------------------------------------------------------------ one step
    def step(
        self,
        frame_queries: Tensor,
        prop_query: Tensor,
        memory: QueryMemory,
        generator: torch.Generator | None = None,
    ) -> dict:
        """Decode one clip of W frames; see the module docstring.

        At test time only the last detector-layer copy of ``frame_queries`` is used (L = 1), as officially.

        Args:
            frame_queries: ``[L, B*W, fQ, C]`` (frame index ``b * W + w``).
            prop_query: ``[cQ, L*B, C]``: ``initial_query(L*B)`` at the first step, then the previous step's
                ``"prop_query"`` (not detached).
            memory: this video's ``new_memory()``; read before and written after decoding (``use_mem``).
            generator: random source of the gate noise in training (the global one when None).
        Returns:
            dict with ``"pred_logits"`` [L, B, cQ, K+1], ``"pred_mask_embed"`` [L, B, cQ, mask_dim],
            ``"pred_cq_embed"`` [L, B, cQ, C] and ``"pred_fq_embed"`` [L, B, W, fQ, C] (both None without
            ``sim_embed``), ``"aux_outputs"`` (training: D-1 dicts of the first three keys for decoder layers
            0..D-2; eval: []), ``"gates"`` / ``"soft_gates"`` / ``"gate_logits"`` (D tensors [L*B, cQ]
            each: the hard gates applied, the Gumbel soft samples (eval: the hard gates), the logits; []
            without ``gated_prop``) and ``"prop_query"`` [cQ, L*B, C] (the last layer's un-normalised output).
        """
        if not self.training:
            frame_queries = frame_queries[-1:]
        num_l, bw, fq, c = frame_queries.shape
        cq, n, _ = prop_query.shape
        if n % num_l or bw % (n // num_l):
            raise ValueError(
                f"GRAttVISHead.step: prop_query has {n} batch items, frame_queries {num_l} copies x {bw} "
                "frames; expected L*B items and B*W frames"
            )
        b = n // num_l
        w = bw // b
        if self.training and w != self.window:
            raise ValueError(
                f"GRAttVISHead.step: {w} frames per video in a training step, "
                f"MODEL.GENVIS.LEN_CLIP_WINDOW is {self.window}"
            )

        x = frame_queries.reshape(n, w, fq, c).permute(1, 2, 0, 3)
        x = self._encode(self.input_proj_dec(x)).flatten(0, 1)  # [W*fQ, N, C]
        pred_fq_embed = None
        if self.use_sim:
            pred_fq_embed = self.sim_embed_frame(x).transpose(0, 1).reshape(num_l, b, w, fq, c)
        dec_pos = self.fq_pos.weight[None, :, None, :].expand(w, fq, n, c).flatten(0, 1)
        query_pos = self.query_embed.weight.unsqueeze(1).expand(cq, n, c)

        output = prop_query
        if self.use_mem:
            v_q = self.pre_query_embed_v(output)
            output = output + v_q + memory.read(self.pre_query_embed_k(output))
        q_in = output

        decoded, gates, soft_gates, gate_logits = [], [], [], []
        for i in range(self.num_layers):
            output = self.transformer_cross_attention_layers[i](
                output, x, None, pos=dec_pos, query_pos=query_pos
            )
            bias = None
            if self.gated_prop:
                logits = self.prop_instance(self.decoder_norm(output)).squeeze(-1)  # [cQ, N]
                hard, soft = gumbel_sigmoid_gate(logits, self.gate_temperature, self.training, generator)
                gate = share_last_copy(hard.t(), num_l)  # [N, cQ]
                bias = gate_attention_bias(gate[(num_l - 1) * b :], self.num_heads, num_l, dtype=output.dtype)
                output = gated_residual(gate, output, q_in)
                gates.append(gate)
                soft_gates.append(soft.t())
                gate_logits.append(logits.t())
            output = self.transformer_self_attention_layers[i](output, query_pos=query_pos, attn_mask=bias)
            output = self.transformer_ffn_layers[i](output)
            if self.training or i == self.num_layers - 1:
                decoded.append(self.decoder_norm(output).transpose(0, 1).reshape(num_l, b, cq, c))

        dec = torch.stack(decoded)  # [D or 1, L, B, cQ, C]
        pred_logits = self.class_embed(dec)
        pred_mask_embed = self.mask_embed(dec)
        pred_cq_embed = self.sim_embed_clip(dec) if self.use_sim else None
        aux = [
            {
                "pred_logits": pred_logits[j],
                "pred_mask_embed": pred_mask_embed[j],
                "pred_cq_embed": None if pred_cq_embed is None else pred_cq_embed[j],
            }
            for j in range(dec.shape[0] - 1)
        ]
        if self.use_mem:
            memory.append(self.pre_memory_embed_k(dec[-1]), self.pre_memory_embed_v(dec[-1]))
        return {
            "pred_logits": pred_logits[-1],
            "pred_mask_embed": pred_mask_embed[-1],
            "pred_cq_embed": None if pred_cq_embed is None else pred_cq_embed[-1],
            "pred_fq_embed": pred_fq_embed,
            "aux_outputs": aux,
            "gates": gates,
            "soft_gates": soft_gates,
            "gate_logits": gate_logits,
            "prop_query": output,
        }
