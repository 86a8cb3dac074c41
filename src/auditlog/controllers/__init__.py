"""Falcon resources: parse the request, call a service, shape the reply. Nothing more."""
