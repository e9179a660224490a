"""benchmarks/encoders.py: the original code's reference line comes from a committed measurement file
(with its date and hardware), never from a constant."""

import importlib.util
import json
import pathlib

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "encoders.py"
spec = importlib.util.spec_from_file_location("encoders_bench", SCRIPT)
enc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(enc)


def test_original_reference_reads_the_measurement_or_says_it_is_missing(tmp_path):
    assert "not measured" in enc.original_reference("cgcnn", tmp_path)
    (tmp_path / "cgcnn_vs_original.json").write_text(json.dumps({
        "original": {"median_samples_per_s": 1234.4}, "date": "2026-12-07 22:00:00",
        "hardware": {"cpu": "Some CPU", "cpu_isa": "avx2"}}))
    line = enc.original_reference("cgcnn", tmp_path)
    assert "~1,234 structures/s" in line and "Some CPU (avx2)" in line and "2026-12-07" in line
    (tmp_path / "crabnet_vs_original_mp_bulk_modulus.json").write_text(json.dumps({"variants": {}}))
    assert "no 'original' entry" in enc.original_reference("crabnet", tmp_path)
