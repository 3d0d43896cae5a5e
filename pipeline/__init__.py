"""The per-call pipeline shared by live calls and recordings: utterance -> redaction -> turn -> dialogue ->
verdicts and report. Live and post-call differ only in where the audio comes from (a socket or a file) and
where the results go (events or a stored report); see docs/architecture.md."""
