"""The event contract: Avro schemas (``avro/*.avsc``), the codec (the only fastavro import) with its
generated reader and varint rules, and the semantic rules and field bounds beyond the Avro types."""
