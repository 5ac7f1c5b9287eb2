"""Attention store: AttnPO step scores and MoLSAKI stepwise matrices, extracted once, read many times.

`config` (what to extract), `inputs` (rollouts or rationales), `extract` (batched, resumable,
data-parallel extraction), `store` (the on-disk format and its reader `AttentionStore`), `view` (HTML
page and heatmaps), `cli` (`attncore extract`, `attncore view`).
"""
