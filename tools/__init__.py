"""Offline tools of the project (not part of the installed service): the training corpus and PII corpus
builders, and the training of the learned answer head. Run from the repository root: `python -m tools.corpus`,
`python -m tools.pii_corpus`, `python -m tools.train`."""
