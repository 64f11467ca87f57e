"""llama-server's weight repacking is turned off on CPUs reporting AMX (its AMX kernels crash in VMs)."""

from emotune.models.llamacpp import repack_flags


def test_amx_cpus_run_without_repacking(tmp_path, monkeypatch):
    monkeypatch.delenv("LLAMA_ARG_REPACK", raising=False)
    amx = tmp_path / "amx"
    amx.write_text("flags\t\t: fpu sse avx512f avx512_vnni amx_bf16 amx_tile amx_int8\n")
    plain = tmp_path / "plain"
    plain.write_text("flags\t\t: fpu sse avx2 fma avx512f\n")
    assert repack_flags(amx) == ["--no-repack"]
    assert repack_flags(plain) == []
    assert repack_flags(tmp_path / "missing") == []


def test_the_operators_llama_arg_repack_wins(tmp_path, monkeypatch):
    amx = tmp_path / "amx"
    amx.write_text("flags\t\t: amx_tile\n")
    monkeypatch.setenv("LLAMA_ARG_REPACK", "1")
    assert repack_flags(amx) == []
