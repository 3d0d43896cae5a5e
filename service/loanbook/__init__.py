"""The loan book: customers tiered by risk from their calls and followed up (calls, SMS, e-mail, letters).

- `policy`: the follow-up policy as pure functions (tiers, business calendar, plans) over `configs/followup.yaml`
- `messages`: the SMS/e-mail/letter templates of `configs/messages.yaml`, rendered without personal numbers
- `repository`: the feature's tables (customers, contacts, call summaries, follow-ups) as typed records: its SQL
- `book`: `LoanBook`, the use-cases: re-plan a customer after each stored report, the daily sweep, the views
- `outbox_queue`: the queue of outgoing messages (queued with their follow-ups, dead letters, requeue): its SQL
- `transports`: SMTP and the signed webhooks that deliver a message
- `outbox`: the worker that claims due messages, sends them and records the outcome
- `customers_api`, `followups_api`: the HTTP routes `/v1/customers` and `/v1/followups`
"""
