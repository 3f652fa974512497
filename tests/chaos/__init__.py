"""The chaos suite (`make chaos`, ``python -m tests.chaos``): the ingest path's exactly-once promise
(projections/writer.py) tried against the real broker and the real engine under faults, with seeded
random kill points, and counted.

Not part of `make test` (it takes minutes, and no file here is named ``test_*.py``). Scenarios, each on
its own Herald installation (namespace and data dir) on one broker the suite starts:

- ``kills`` (kills.py): two workers over a steady stream, SIGKILLed at random moments, at the writer's
  fault points (``before_insert``, ``after_run``, ``before_marker``) and in the middle of an insert
  slowed by an extra materialized view, between the events part and that view's part;
- ``pauses``: SIGSTOP past the group session, at a ``before_insert`` fault point and at random;
- ``owner_restart``: the worker that owns the embedded warehouse killed and restarted;
- ``broker_restart``: the broker stopped mid-stream and started again on its port and data dir;
- ``poison``: every kind of bad message among valid events, with out-of-range values in valid framing.

Afterwards each scenario is measured (measure.py): valid events sent against rows in events (lost,
duplicated), every rollup, engagement_profiles and experiment_variant_minute (and the slow view's
table) against the recount from events, every bad message on the dead-letter topic exactly once and
never as a row, every batch marked, and every derived table's fingerprint before and after a replay
of the log. report.py prints it and says PASS or FAIL.
"""
