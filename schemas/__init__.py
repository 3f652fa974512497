"""The event contract: Avro schemas (``avro/*.avsc``) and the codec, the only fastavro import."""
