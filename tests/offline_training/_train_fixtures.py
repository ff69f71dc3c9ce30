"""Shared tiny data and configs for the training-loop tests (test_train*, test_resume, test_ddp)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: A model far smaller than "small": two modalities, 16-d everywhere (seconds per test on CPU).
TINY_MODEL = {
    "modalities": ["eeg", "airflow"],
    "backbone_channels": [4, 8], "backbone_kernels": [3], "backbone_stem_stride": 8,
    "backbone_se_reduction": 2, "frame_dim": 16,
    "nn_dim": 16, "nn_depth": 1, "nn_heads": 2, "nn_mlp_ratio": 1.0, "nn_decoder_dim": 8,
    "nn_decoder_depth": 1, "nn_decoder_heads": 2, "nn_proj_hidden": 16, "nn_proj_dim": 8,
    "fusion_dim": 16, "fusion_depth": 1, "fusion_heads": 2, "fusion_mlp_ratio": 1.0,
    "fusion_decoder_dim": 8, "fusion_decoder_depth": 1, "fusion_decoder_heads": 2,
    "mamba_headdim": 8, "mamba_chunk_size": 8, "head_hidden": 8,
}


def tiny_overrides(**extra: object) -> dict[str, object]:
    """Flat run-config overrides for a run of a few seconds."""
    ov: dict[str, object] = {f"model_overrides.{k}": v for k, v in TINY_MODEL.items()}
    ov.update({
        "model": "small", "threads": 1,
        "pretrain_unimodal.steps": 4, "pretrain_unimodal.batch_size": 4, "pretrain_unimodal.warmup_steps": 1,
        "pretrain_unimodal.log_every": 1, "pretrain_unimodal.ckpt_every": 100,
        "pretrain_multimodal.steps": 2, "pretrain_multimodal.batch_size": 4, "pretrain_multimodal.log_every": 1,
        "finetune.window_steps": 0, "finetune.window_len": 4, "finetune.window_batch": 4,
        "finetune.night_passes": 2, "finetune.chunk": 8, "finetune.lanes": 2, "finetune.log_every": 1,
        "finetune.eval_every": 1, "probe.steps": 5,
    })
    ov.update(extra)
    return ov


def make_shards(root: Path, subjects: int = 5, hours: float = 0.15, seed: int = 3) -> Path:
    """Synthesise ``subjects`` short nights and prepare them; returns the shard folder."""
    from synthsleep.offline_training.prepare import prepare
    from synthsleep.psg.synthetic import SubjectParams, synthesize_night, write_night

    nights = root / "nights"
    nights.mkdir(parents=True, exist_ok=True)
    for s in range(subjects):
        subj = SubjectParams.draw(np.random.default_rng([seed, s]), (10.0, 40.0))
        n = synthesize_night(seed=seed * 1000 + s, hours=hours, subject=subj, artifacts=False)
        write_night(n, nights / f"synth-s{s}-n0.edf")
    out = root / "shards"
    man = prepare(nights, out, workers=1, split=(0.6, 0.2, 0.2), seed=seed)
    assert man.split["train"] and man.split["val"], man.split
    return out


def shared_shards(tmp_path_factory) -> Path:  # noqa: ANN001 - pytest's TempPathFactory
    """One tiny prepared dataset per pytest session (made on first use)."""
    root = tmp_path_factory.getbasetemp() / "train_loop_data"
    if not (root / "shards" / "manifest.json").exists():
        make_shards(root)
    return root / "shards"


def read_metrics(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
