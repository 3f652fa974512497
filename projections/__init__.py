"""The warehouse side: DDL migrations, pure event->row mapping, the batching writer, read queries."""
