"""Refit server (issue 4): flagged configurations in, labelled and refitted parameters out.

Modules, one job each:
  protocol  message schema (msgpack), validation, configuration encoding
  auth      shared-secret token file, per-message HMAC
  store     ASE database (SQLite) of every configuration and its status
  executor  reference labelling: local worker processes or Dask distributed
  refit     refit policy, Bayesian refit, versioned parameter files, rollback, near-duplicates
  server    `pylal serve CONFIG.toml`: the ZeroMQ ROUTER loop and background threads
  client    the non-blocking client used by LAMMPS rank 0 (spools to disk when the server is away)
  config    the TOML configuration with its defaults
See docs/server.md.
"""
