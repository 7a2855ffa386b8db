"""Sending one callback over HTTP: targets, signatures, outcome policy and the sender."""
