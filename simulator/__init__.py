"""Traffic simulator: seeded lifecycle traffic, anomaly scenarios and bad input, emitted to Kafka.

``model`` and ``profiles`` (what traffic looks like), ``scenarios`` and ``badinput`` are pure;
``run`` is the shell that paces and emits through a ``streams.emitter.Emitter``.
"""
