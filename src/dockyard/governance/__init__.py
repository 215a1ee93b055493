"""Governance: the policy of ``[governance]`` and its gates, model cards, personal-data protection
and the compliance report — what lets a regulated team show who approved a model, on what
evidence, and that personal data was protected. Below the services (which run the use cases:
promotions, erasure, reports), above monitoring; never imports a web framework."""
