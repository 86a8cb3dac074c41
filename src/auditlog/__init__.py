"""auditlog: an append-only, tamper-evident audit trail for microservices."""
