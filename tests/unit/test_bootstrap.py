"""What service/bootstrap.py builds follows the settings it is given, not the process's environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from nlu.script import DEFAULT_SCRIPT_FILE
from service import bootstrap
from service.coaching.repository import CoachingRows
from service.loanbook.repository import LoanBookRows
from service.settings import Settings


def test_coaching_weighs_topics_with_the_script_of_the_settings_it_was_built_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The environment names no script; the app's own settings name one where the loan amount is high-sensitivity.
    monkeypatch.delenv("HUIFANG_NLU__SCRIPT_FILE", raising=False)
    text = DEFAULT_SCRIPT_FILE.read_text(encoding="utf-8")
    amount = text.index("  loan_amount:")
    changed = text[:amount] + text[amount:].replace("sensitivity: medium", "sensitivity: high", 1)
    script = tmp_path / "call_script.yaml"
    script.write_text(changed, encoding="utf-8")
    default = bootstrap.report_rows(Settings(data_dir=tmp_path))
    own = bootstrap.report_rows(Settings(data_dir=tmp_path, nlu={"script_file": script}))
    assert [type(r) for r in own] == [CoachingRows, LoanBookRows]
    assert isinstance(default[0], CoachingRows) and isinstance(own[0], CoachingRows)
    assert default[0].sensitivity["loan_amount"] == "medium"
    assert own[0].sensitivity["loan_amount"] == "high"
    assert {k: v for k, v in own[0].sensitivity.items() if k != "loan_amount"} == \
        {k: v for k, v in default[0].sensitivity.items() if k != "loan_amount"}


def test_options_come_from_the_settings_sections_that_name_them(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, live={"min_silence_ms": 450, "final_beam_size": 3, "decode_workers": 2},
                        asr={"vad_threshold": 0.4}, audio={"max_file_mb": 7})
    segment = bootstrap.segment_options(settings)
    assert segment.stream.min_silence_ms == 450 and segment.stream.vad_threshold == 0.4
    assert segment.beam_size == 3
    assert bootstrap.decode_limits(settings).max_file_bytes == 7 << 20
    assert bootstrap.asr_options(settings).model_cache_dir == str(tmp_path / "models")
    # A CTranslate2 replica per live decode worker and per scoring worker: otherwise a second worker's decodes only
    # wait for the first's, and a live final for a recording's whole batch.
    assert bootstrap.asr_options(settings).num_workers == 2 + settings.scoring.workers
