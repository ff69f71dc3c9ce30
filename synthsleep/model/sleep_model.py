"""SleepModel: per-epoch multimodal encoder + stateful Mamba2 + stage/apnea/hypopnea heads.

    x [B, T, M, 3000], present [B, T, M]
      -> per modality NeuroNet (frame backbone + transformer) tokens [B*T, M, 27, nn_dim]
      -> Fusion.embed -> epoch embedding e [B, T, d]          (absent modalities masked)
      -> for each Mamba layer: h = h + Mamba2(BatchNorm(h))   (causal, state carried)
      -> heads -> stage logits [B, T, 5], apnea / hypopnea logits [B, T]
         (with cfg.eeg_stage_head, epochs whose only present modality is EEG read their stage
          from the EEG-alone readout; ``present`` therefore reaches the heads as well)

``forward`` scans a whole sequence (training; the state comes back for truncated BPTT),
``step`` does one epoch per call (inference; probabilities and the new state as plain tensors).
In eval mode ``forward`` over T epochs equals T calls of ``step``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import ModelConfig
from .fusion import Fusion, drop_modalities
from .heads import Heads
from .mamba2 import Mamba2
from .neuronet import NeuroNet

log = logging.getLogger(__name__)

State = tuple[Tensor, Tensor]  # (conv_state [L, B, conv_dim, d_conv], ssm_state [L, B, H, P, N])


@dataclass
class SleepOutputs:
    """Per-epoch logits of ``SleepModel.forward``."""

    stage_logits: Tensor  # [B, T, n_stages]
    apnea_logit: Tensor  # [B, T]
    hypopnea_logit: Tensor  # [B, T]


class SleepModel(nn.Module):
    """The whole model; see module docstring. ``cfg.modalities`` fixes M and its order."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoders = nn.ModuleDict({m: NeuroNet(cfg) for m in cfg.modalities})
        self.fusion = Fusion(cfg)
        d = cfg.fusion_dim
        self.temporal_norm = nn.ModuleList(nn.BatchNorm1d(d) for _ in range(cfg.mamba_layers))
        self.mamba = nn.ModuleList(
            Mamba2(d, cfg.mamba_d_state, cfg.mamba_d_conv, cfg.mamba_expand, cfg.mamba_headdim,
                   cfg.mamba_chunk_size, use_cuda_kernels=cfg.use_cuda_kernels)
            for _ in range(cfg.mamba_layers)
        )
        self.heads = Heads(cfg)

    # ------------------------------------------------------------------ checks
    def _check_epochs(self, x: Tensor, present: Tensor, lead: tuple[int, ...], what: str) -> None:
        if torch.onnx.is_in_onnx_export():
            return  # shapes are fixed by the example inputs; keep the traced graph clean
        cfg = self.cfg
        want = (*lead, cfg.n_modalities, cfg.epoch_samples)
        if x.dim() != len(want) or tuple(x.shape[len(lead):]) != want[len(lead):]:
            names = ("B", "T")[: len(lead)] if len(lead) == 2 else ("N",)
            raise ValueError(
                f"{what}: x must be [{', '.join(names)}, {cfg.n_modalities}, {cfg.epoch_samples}] "
                f"(modalities {list(cfg.modalities)}), got {tuple(x.shape)}")
        if tuple(present.shape) != tuple(x.shape[:-1]) or present.dtype != torch.bool:
            raise ValueError(f"{what}: present must be bool {tuple(x.shape[:-1])}, got "
                             f"{present.dtype} {tuple(present.shape)}")

    # ------------------------------------------------------------------ encoder
    def neuronet_tokens(self, x: Tensor, present: Tensor) -> Tensor:
        """x [N, M, 3000], present [N, M] -> NeuroNet tokens [N, M, S, nn_dim].

        Absent modalities' samples are replaced by zeros (never NaN-propagating) before encoding;
        in training mode only present rows go through each encoder (clean BatchNorm statistics),
        absent rows get zero tokens. In eval mode a modality absent from every row is not encoded
        at all (zero tokens: the fusion zeroes absent tokens anyway, so nothing changes; an
        EEG-only night runs 1 encoder of 8). An exported (or meta) graph encodes every modality.
        """
        n = x.shape[0]
        x = torch.where(present[:, :, None], x, torch.zeros_like(x))
        traced = torch.onnx.is_in_onnx_export() or x.is_meta  # no data to look at
        out = []
        for i, m in enumerate(self.cfg.modalities):
            enc = self.encoders[m]
            if self.training:
                idx = present[:, i].nonzero().squeeze(1)
                tok = x.new_zeros(n, self.cfg.n_frames, self.cfg.nn_dim)
                if idx.numel() > 0:  # (BatchNorm sees idx.numel() * 27 frames)
                    tok = tok.index_copy(0, idx, enc.encode(x[:, i].index_select(0, idx))[0])
            elif traced or bool(present[:, i].any()):
                tok = enc.encode(x[:, i])[0]
            else:
                tok = x.new_zeros(n, self.cfg.n_frames, self.cfg.nn_dim)
            out.append(tok)
        return torch.stack(out, dim=1)

    def encode_epochs(self, x: Tensor, present: Tensor) -> Tensor:
        """Fused per-epoch embedding: x [N, M, 3000], present bool [N, M] -> [N, fusion_dim]."""
        self._check_epochs(x, present, (x.shape[0],), "encode_epochs")
        return self.fusion.embed(self.neuronet_tokens(x, present), present)

    # ------------------------------------------------------------------ temporal
    def allocate_state(self, batch: int, device: torch.device | str | None = None) -> State:
        """Zero state: conv [L, B, conv_dim, d_conv], ssm [L, B, nheads, headdim, d_state]."""
        cfg = self.cfg
        conv = torch.zeros(cfg.mamba_layers, batch, cfg.mamba_conv_dim, cfg.mamba_d_conv,
                           device=device)
        ssm = torch.zeros(cfg.mamba_layers, batch, cfg.mamba_nheads, cfg.mamba_headdim,
                          cfg.mamba_d_state, device=device)
        return conv, ssm

    @staticmethod
    def detach_state(state: State) -> State:
        """Cut the graph between truncated-BPTT chunks."""
        return state[0].detach(), state[1].detach()

    def temporal(self, e: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """e [B, T, d] -> (h [B, T, d], new state). Gradients flow into the given state."""
        b, t, d = e.shape
        conv, ssm = state if state is not None else self.allocate_state(b, e.device)
        h = e
        convs, ssms = [], []
        for layer, (norm, mamba) in enumerate(zip(self.temporal_norm, self.mamba)):
            z = norm(h.reshape(b * t, d)).reshape(b, t, d)
            y, c, s = mamba(z, conv[layer], ssm[layer])
            h = h + y
            convs.append(c)
            ssms.append(s)
        return h, (torch.stack(convs), torch.stack(ssms))

    # ------------------------------------------------------------------ training
    def forward(self, x: Tensor, present: Tensor, state: State | None = None, side: Tensor | None = None
                ) -> tuple[SleepOutputs, State]:
        """x [B, T, M, 3000], present bool [B, T, M] -> (SleepOutputs, new state).

        ``side`` float [B, T, N_SIDE]: the epochs' EEG side features (``psg.side_features``),
        read by the stage readouts (``cfg.eeg_stage_head``, ``cfg.montage_stage_head``); None or a
        NaN row: unknown, the shared stage head reads the epoch.

        Training mode applies modality dropout (cfg.modality_dropout). Detach the returned state
        (``detach_state``) before feeding it to the next chunk of a night.
        """
        self._check_epochs(x, present, tuple(x.shape[:2]), "SleepModel.forward")
        b, t, m, s = x.shape
        flat_present = present.reshape(b * t, m)
        if self.training:
            flat_present = drop_modalities(flat_present, self.cfg.modality_dropout)
        tokens = self.neuronet_tokens(x.reshape(b * t, m, s), flat_present)
        return self._from_tokens(tokens, flat_present, b, t, state, side)

    def forward_tokens(self, tokens: Tensor, present: Tensor, state: State | None = None,
                       side: Tensor | None = None) -> tuple[SleepOutputs, State]:
        """Like ``forward`` but from precomputed NeuroNet tokens [B, T, M, S, nn_dim].

        For fine-tuning with frozen NeuroNets: compute ``neuronet_tokens`` once (no grad), cache
        them, and train fusion + Mamba + heads on the cache. Modality dropout as in forward.
        """
        b, t, m = present.shape
        want = (b, t, self.cfg.n_modalities, self.cfg.n_frames, self.cfg.nn_dim)
        if tuple(tokens.shape) != want or present.dtype != torch.bool:
            raise ValueError(f"forward_tokens: tokens must be {list(want)} with bool present "
                             f"[B, T, M]; got {tuple(tokens.shape)}, {present.dtype}")
        flat_present = present.reshape(b * t, m)
        if self.training:
            flat_present = drop_modalities(flat_present, self.cfg.modality_dropout)
        return self._from_tokens(tokens.reshape(b * t, *want[2:]), flat_present, b, t, state, side)

    def _from_tokens(self, tokens: Tensor, flat_present: Tensor, b: int, t: int,
                     state: State | None, side: Tensor | None) -> tuple[SleepOutputs, State]:
        e = self.fusion.embed(tokens, flat_present).reshape(b, t, -1)
        h, new_state = self.temporal(e, state)
        flat_side = None if side is None else side.reshape(b * t, -1)
        stage, apnea, hyp = self.heads(h.reshape(b * t, -1), flat_present, flat_side)
        return SleepOutputs(stage.reshape(b, t, -1), apnea.reshape(b, t),
                            hyp.reshape(b, t)), new_state

    # ------------------------------------------------------------------ inference
    def step(self, x: Tensor, present: Tensor, conv_state: Tensor, ssm_state: Tensor,
             side: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """One epoch per bed: x [B, M, 3000], present bool [B, M], states from allocate_state,
        side float [B, N_SIDE] (EEG side features, ``psg.side_features``; a NaN row or None:
        unknown, the shared stage head reads the epoch).

        Returns (stage_prob [B, 5], apnea_prob [B], hypopnea_prob [B], conv_state, ssm_state).
        Call in eval mode. ONNX-exportable (inputs x, present, conv_state, ssm_state, side).
        """
        return self.temporal_step(self.encode_epochs(x, present), present, conv_state, ssm_state, side)

    def temporal_step(self, e: Tensor, present: Tensor, conv_state: Tensor, ssm_state: Tensor,
                      side: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The stateful part of ``step``: fused embeddings e [B, fusion_dim] (``encode_epochs``),
        the sensor set they came from (present bool [B, M]: picks the stage readout), the EEG
        side features (side [B, N_SIDE]: read by the stage readouts only) and states
        -> (stage_prob [B, 5], apnea_prob [B], hypopnea_prob [B], conv_state, ssm_state).
        ``step(x, present, ...) == temporal_step(encode_epochs(x, present), present, ...)``:
        offline scoring runs ``encode_epochs`` batched over a whole night, then this per epoch.
        """
        h = e
        convs, ssms = [], []
        for layer, (norm, mamba) in enumerate(zip(self.temporal_norm, self.mamba)):
            y, c, s = mamba.step(norm(h), conv_state[layer], ssm_state[layer])
            h = h + y
            convs.append(c)
            ssms.append(s)
        stage, apnea, hyp = self.heads(h, present, side)
        return (torch.softmax(stage, dim=-1), torch.sigmoid(apnea), torch.sigmoid(hyp),
                torch.stack(convs), torch.stack(ssms))


class StepWrapper(nn.Module):
    """``forward = SleepModel.step`` for ``torch.onnx.export`` (names per CONTRACTS.md).

    ``encoder``: the same function as ``model.encode_epochs`` in another form (the export uses
    ``stacked.StackedEncoder``: the modalities as one network, ~3x fewer graph nodes).
    """

    input_names = ("x", "present", "conv_state", "ssm_state", "side")
    output_names = ("stage_prob", "apnea_prob", "hypopnea_prob", "conv_state_out", "ssm_state_out")

    def __init__(self, model: SleepModel, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.encoder = encoder

    def forward(self, x: Tensor, present: Tensor, conv_state: Tensor, ssm_state: Tensor, side: Tensor
                ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        if self.encoder is None:
            return self.model.step(x, present, conv_state, ssm_state, side)
        return self.model.temporal_step(self.encoder(x, present), present, conv_state, ssm_state, side)


class EncoderWrapper(nn.Module):
    """``forward = SleepModel.encode_epochs`` for the encoder graph of the split artifact:
    (x [N, M, 3000], present bool [N, M]) -> embedding [N, fusion_dim]. No state. ``encoder``
    as in ``StepWrapper``."""

    input_names = ("x", "present")
    output_names = ("embedding",)

    def __init__(self, model: SleepModel, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.encoder = encoder

    def forward(self, x: Tensor, present: Tensor) -> Tensor:
        if self.encoder is None:
            return self.model.encode_epochs(x, present)
        return self.encoder(x, present)


class TemporalWrapper(nn.Module):
    """``forward = SleepModel.temporal_step`` for the temporal graph of the split artifact."""

    input_names = ("embedding", "present", "conv_state", "ssm_state", "side")
    output_names = StepWrapper.output_names

    def __init__(self, model: SleepModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, embedding: Tensor, present: Tensor, conv_state: Tensor, ssm_state: Tensor, side: Tensor
                ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return self.model.temporal_step(embedding, present, conv_state, ssm_state, side)
