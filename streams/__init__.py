"""The Faust app, topics, the emitter, and thin agents around pure decision code."""
