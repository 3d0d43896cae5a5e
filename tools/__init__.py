"""Offline tools of the project (not part of the installed service): the training corpus and PII corpus
builders, the training of the learned answer head, and the measures that tests and benchmarks share (`cer`,
`pii_corpus.leaked`). Run from the repository root: `python -m tools.corpus`,
`python -m tools.pii_corpus`, `python -m tools.train`."""
