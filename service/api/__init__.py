"""HTTP and websocket routes, one module per resource; a module's name is its URL prefix:

- `health`: `/healthz`
- `assess`: `/v1/assess`
- `recordings`: `/v1/recordings` (upload a finished call, follow its scoring job)
- `calls`: `/v1/calls` over HTTP (reports, list, stored audio, raw transcript, deletion)
- `calls_ws`: `/v1/calls/{id}/audio|twilio|events`, the live calls' websockets
- `demo`: `/v1/demo` (the console's sample calls)
- `pages`: `/console` and `/calls`, the HTML pages
- `transcriptions`: `/v1/audio/transcriptions`, OpenAI-compatible transcription of a file (docs/transcriptions.md)

Routes parse and answer; the work is in `service.live`, `service.workers.jobs`, `pipeline` and `nlu`. A feature's
routes live in its own folder: `service/loanbook/customers_api.py`, `followups_api.py`,
`service/coaching/agents_api.py`.
"""
