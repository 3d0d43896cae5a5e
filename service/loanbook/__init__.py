"""The loan book: customers tiered by risk from their calls and followed up (calls, SMS, e-mail, letters).

- `policy`: the follow-up policy as pure functions (tiers, business calendar, plans) over `configs/followup.yaml`
- `messages`: the SMS/e-mail/letter templates of `configs/messages.yaml`, rendered without personal numbers
- `repository`: the feature's tables (customers, contacts, call summaries, follow-ups)
- `book`: `LoanBook`, which re-plans a customer after each stored report and runs the daily sweep
- `outbox`: the queue of outgoing messages, its transports and its worker
- `customers_api`, `followups_api`: the HTTP routes `/v1/customers` and `/v1/followups`
"""
