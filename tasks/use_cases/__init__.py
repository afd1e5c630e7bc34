"""Use cases: plain functions that open one unit of work and apply domain rules."""
