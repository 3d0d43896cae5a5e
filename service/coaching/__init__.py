"""Agent coaching: figures per call and per period, the scoreboard and each agent's card.

- `figures`: the figures as pure functions over a stored report (`call_stats`), their sums and the rules of
  `configs/coaching.yaml`
- `repository`: coaching's table (`agent_call_stats`), one row per stored call, and the period queries
- `cards`: the scoreboard and an agent's card, as the API and pages show them
- `agents_api`: the HTTP routes `/v1/agents`
"""
