"""Talking to upstream registries: the client, tokens, accounts and their failover, rate limits."""
