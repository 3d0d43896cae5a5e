"""huifang's domain data, installed with the package as `huifang_configs`.

The YAML files beside this one are what a bank edits: the call script (`call_script.yaml`), cue lexicons
(`cues.yaml`), risk weights and actions (`risk.yaml`), the ASR prompt and lexicon (`asr.yaml`) and the corpus
templates (`corpus.yaml`). In a checkout they are this folder; in an installed package they ship as package data,
so `configs_file(name)` finds them without walking up from the source files. Settings (`HUIFANG_NLU__SCRIPT_FILE`
and the like) point at edited copies elsewhere.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def configs_file(name: str) -> Path:
    """The path of the packaged domain-data file `name` (e.g. "call_script.yaml")."""
    return Path(str(resources.files(__name__).joinpath(name)))
