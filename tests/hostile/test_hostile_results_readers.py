"""The simulator's results reader and the validation plot read results CSVs by the same rules (issue 14):
bounded, UTF-8, numbers in ASCII digits and finite, config_json parsed within bounds; else one InputError."""
from __future__ import annotations

import json

import pytest

from vramplan.errors import InputError
from vramplan.results_files import MAX_FIELD_CHARS

pytest.importorskip("torch")  # vramplan.simulate imports torch

HEADER = "model,gpu,method,seq_len,measured_peak_bytes,config_json,status\n"
CONFIG = json.dumps({"model": "tinyllama-1.1b", "gpu": "h100", "run": {"seq_len": 256}}).replace('"', '""')
HOSTILE_ROWS = {
    "measured nan": 'tinyllama-1.1b,h100,qlora,256,nan,,ok\n',
    "measured inf": 'tinyllama-1.1b,h100,qlora,256,inf,,ok\n',
    "measured arabic digits": 'tinyllama-1.1b,h100,qlora,256,١٢٣,,ok\n',
    "measured negative": 'tinyllama-1.1b,h100,qlora,256,-5,,ok\n',
    "config_json not json": 'x,y,qlora,,1000,"{oops",ok\n',
    "config_json a list": 'x,y,qlora,,1000,"[1,2]",ok\n',
    "config_json deep": 'x,y,qlora,,1000,"' + "[" * 2000 + "]" * 2000 + '",ok\n',
    "config_json run not an object": 'x,y,qlora,,1000,"' + json.dumps(
        {"model": "tinyllama-1.1b", "gpu": "h100", "run": [1]}).replace('"', '""') + '",ok\n',
    "config_json layers not a number": 'x,y,qlora,,1000,"' + json.dumps(
        {"model": "tinyllama-1.1b", "gpu": "h100", "run": {}, "layers": "٣"}).replace('"', '""') + '",ok\n',
    "field too long": 'tinyllama-1.1b,h100,qlora,256,1000,,' + "o" * (MAX_FIELD_CHARS + 1) + '\n',
    "no model column value": ',,qlora,256,1000,,ok\n',
}


@pytest.mark.parametrize("name", list(HOSTILE_ROWS))
def test_compare_with_results_refuses_a_hostile_row_with_one_input_error(tmp_path, name):
    from vramplan.simulate import compare_with_results

    path = tmp_path / "results.csv"
    path.write_text(HEADER + HOSTILE_ROWS[name], encoding="utf-8")
    with pytest.raises(InputError) as caught:
        compare_with_results(path)
    assert "\n" not in str(caught.value)


def test_compare_with_results_refuses_a_file_that_is_not_utf8(tmp_path):
    from vramplan.simulate import compare_with_results

    path = tmp_path / "results.csv"
    path.write_bytes(HEADER.encode() + b"tiny\xff\xfe,h100,qlora,256,1000,,ok\n")
    with pytest.raises(InputError, match="UTF-8"):
        compare_with_results(path)


@pytest.mark.parametrize("value", ["nan", "inf", "١٢٣", "1_000"])
def test_validation_plot_reader_refuses_numbers_the_other_readers_refuse(tmp_path, value):
    from vramplan.plots.validation import load_validation_results

    path = tmp_path / "results.csv"
    path.write_text("model,method,gpu,predicted_peak_bytes,measured_peak_bytes,status\n"
                    f"m,qlora,h100,1000,{value},ok\n", encoding="utf-8")
    with pytest.raises(InputError, match="measured_peak_bytes"):
        load_validation_results([path])


def test_a_sound_harness_row_still_compares(tmp_path):
    from vramplan.simulate import compare_with_results

    path = tmp_path / "results.csv"
    path.write_text(HEADER + f'x,y,qlora,,1500000000,"{CONFIG}",ok\n', encoding="utf-8")
    (row,) = compare_with_results(path)
    assert row["measured"] == 1_500_000_000 and row["analytic"] > 0
