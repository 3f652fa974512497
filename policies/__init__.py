"""Declarative rules (YAML under policies/) with their pydantic models and pure evaluate() functions:
provider routing and failover, rate limits and budgets, SLAs, segments."""
