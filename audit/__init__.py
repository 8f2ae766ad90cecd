"""The audit log: who pulled what, from where, when."""
