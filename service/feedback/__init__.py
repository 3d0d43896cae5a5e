"""Agents' verdicts on prompts and their review (issue #31, docs/floor.md).

An agent marks a prompt of their call 已追问 (`asked_again`) or 提示有误 (`disputed`: the answer was in fact clear,
or the question was taken for the wrong topic). The server finds the prompt itself, in the stored report or, while
the call streams, in the call's stored finals (`prompts`); the verdict is kept in `prompt_feedback`, audited and
told to the call's other screens. Supervisors review disputes (`api`): an upheld one corrects the call's stored
verdict, risk and plan through the re-scoring machinery (`review`), and `huifang export-feedback` writes the
reviewed ones as an evaluation set for the assessor (`export`).
"""
